"""impact-elastix: the IMPACT semantic similarity metric for elastix.

The package ships ``elastix`` and ``transformix`` executables with the IMPACT metric as the plugin
``libImpactMetric.so`` beside them (``lib/``); ``(Metric "Impact")`` in a parameter map selects it.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_PACKAGE_DIR = Path(__file__).resolve().parent


def bin_dir() -> Path:
    """The folder holding ``elastix`` and ``transformix`` (SlicerElastix's "custom elastix location")."""
    return _PACKAGE_DIR / "bin"


def plugin_path() -> Path:
    """The IMPACT plugin, ``libImpactMetric.so``, which the executables load from ``../lib``."""
    return _PACKAGE_DIR / "lib" / "libImpactMetric.so"


def elastix_executable() -> Path:
    return bin_dir() / "elastix"


def transformix_executable() -> Path:
    return bin_dir() / "transformix"
