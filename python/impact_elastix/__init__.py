"""impact-elastix: the IMPACT semantic similarity metric for elastix.

The package ships ``elastix`` and ``transformix`` executables with the IMPACT metric as the plugin
``libImpactMetric.so`` beside them (``lib/``); ``(Metric "Impact")`` in a parameter map selects it.
The Python API follows itk-elastix: ``elastix_registration_method``, ``transformix_filter``,
``transformix_deformation_field``, ``transformix_jacobian``, ``transformix_pointset`` and
``ParameterObject``, plus ``impact_parameter_map`` and ``presets`` for IMPACT maps.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

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


# Loaded on first use, so that `impact-elastix bin-dir` and `import impact_elastix` stay light.
_LAZY = {
    "ParameterObject": "parameter_object",
    "elastix_registration_method": "registration",
    "transformix_filter": "registration",
    "transformix_deformation_field": "registration",
    "transformix_jacobian": "registration",
    "transformix_pointset": "registration",
    "ArrayImage": "images",
    "image_from_array": "images",
    "ElastixError": "executables",
    "FeatureModel": "impact_map",
    "impact_parameter_map": "impact_map",
    "inspect_model": "models.inspection",
    "presets": "presets",
}
__all__ = sorted(_LAZY) + ["bin_dir", "elastix_executable", "plugin_path", "transformix_executable"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'impact_elastix' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    return module if name == _LAZY[name] else getattr(module, name)


def __dir__() -> list[str]:
    return __all__
