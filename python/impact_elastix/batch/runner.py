"""``register_many``: a cohort of pairs, each its own elastix process, locally or on Dask workers."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..parameter_object import ParameterObject, format_parameter_map
from .engines import ClusterOptions, available_memory, dask_client, run_dask, run_local, slots
from .job import Job
from .manifest import Pair, as_pairs
from .memory import BASE, estimate_memory
from .report import Progress, write_summary


def _note(message: str) -> None:
    print(f"impact-elastix batch: {message}", file=sys.stderr)


def _jobs(
    pairs: list[Pair], maps: ParameterObject, out: Path, threads: int, retries: int, memory: int | None
) -> list[Job]:
    texts = tuple(format_parameter_map(m) for m in maps.GetParameterMaps())
    jobs = []
    for pair in pairs:
        need = memory
        if need is None:
            try:
                need = estimate_memory(maps.GetParameterMaps(), pair.fixed, pair.moving, Path.cwd())
            except (OSError, ValueError):
                need = BASE  # unreadable input: the pair fails at once, with the reason
        jobs.append(Job(pair, texts, out / pair.id, Path.cwd(), threads, retries, need))
    return jobs


def register_many(
    pairs: str | Path | Sequence[Pair | Mapping[str, str | Path | None]],
    parameter_object: Any,
    output_directory: str | Path,
    *,
    threads_per_job: int = 1,
    jobs: int | None = None,
    scheduler: str | None = None,
    cluster: ClusterOptions | None = None,
    retries: int = 0,
    memory_per_job: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Registers every pair into ``output_directory/<id>/``; returns the summary rows (manifest order).

    ``pairs``: a manifest CSV (``id, fixed, moving`` and optional ``fixed_mask, moving_mask,
    initial_transform, fixed_landmarks, moving_landmarks``; relative paths against its folder), or
    ``Pair`` objects or dicts with those columns. ``parameter_object``: anything
    ``elastix_registration_method`` takes (our or itk's ParameterObject, dicts, parameter files).
    Each elastix gets ``-threads threads_per_job``. Where: by default a local pool of ``jobs``
    concurrent pairs (default: cores // threads_per_job); ``scheduler`` a Dask scheduler address or
    ``"local:N"`` (a LocalCluster of N worker processes); ``cluster`` an HPC cluster through
    dask-jobqueue. Pairs finished by an earlier run with the same inputs and maps are reused; a
    failing pair is retried ``retries`` times, then recorded as ``failed`` with elastix's error text.
    ``memory_per_job`` (bytes) overrides the estimate each job declares. Writes ``summary.csv``,
    ``summary.json`` and ``overview.html``; on Ctrl-C, the summary of what finished, then
    KeyboardInterrupt.
    """
    if threads_per_job < 1:
        raise ValueError(f"threads_per_job must be >= 1, got {threads_per_job}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if scheduler is not None and cluster is not None:
        raise ValueError("give scheduler or cluster, not both")
    if jobs is not None and (scheduler is not None or cluster is not None):
        raise ValueError(f"jobs={jobs} sizes the local pool; on Dask the workers' threads decide how many run")
    if memory_per_job is not None and memory_per_job < 1:
        raise ValueError(f"memory_per_job must be a positive number of bytes, got {memory_per_job}")
    cohort = as_pairs(pairs)
    maps = ParameterObject.from_any(parameter_object)
    if len(maps) == 0:
        raise ValueError("parameter_object has no parameter maps")
    out = Path(output_directory).resolve()  # workers may start elsewhere
    out.mkdir(parents=True, exist_ok=True)
    work = _jobs(cohort, maps, out, threads_per_job, retries, memory_per_job)

    local = scheduler is None and cluster is None
    rows: dict[str, dict[str, Any]] = {}
    bar = Progress(len(work), enabled=progress)

    def on_row(row: dict[str, Any]) -> None:
        rows[row["id"]] = row
        bar.finished(row, was_running=local)

    try:
        if local:
            pool_size = jobs or max(1, (os.cpu_count() or 1) // threads_per_job)
            run_local(work, pool_size, available_memory(), lambda _job: bar.started(), on_row)
        else:
            with dask_client(scheduler, cluster) as client:
                bar.capacity = slots(client)
                run_dask(client, work, threads_per_job, on_row, _note)
    except KeyboardInterrupt:
        bar.close()
        finished = [rows[p.id] for p in cohort if p.id in rows]
        write_summary(out, finished)
        _note(f"interrupted: {len(finished)} of {len(cohort)} pairs finished (in {out}/summary.csv); "
              "run the same command again to do the rest")  # fmt: skip
        raise
    bar.close()
    ordered = [rows[p.id] for p in cohort]
    write_summary(out, ordered)
    return ordered
