"""Cohorts: many pairs, each its own elastix process, resumable, on a local pool or Dask workers.

``register_many`` is the API, ``impact-elastix batch`` the command. Modules: ``manifest`` (the pairs),
``job`` (one pair on a worker), ``memory`` (what a job declares), ``engines`` (local pool, Dask,
dask-jobqueue), ``report`` (progress, summary, overview), ``runner`` (``register_many``).
"""

from .engines import ClusterOptions, WorkerError
from .manifest import ManifestError, Pair, read_manifest
from .runner import register_many

__all__ = ["ClusterOptions", "ManifestError", "Pair", "WorkerError", "read_manifest", "register_many"]
