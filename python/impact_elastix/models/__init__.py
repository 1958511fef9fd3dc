"""Feature extractors for IMPACT: MIND descriptors (TorchScript and built in), export of any
PyTorch module, inspection, the model store (``~/.IMPACT/models``, the public IMPACT model
repository's names).

``inspect`` and ``ModelInfo`` load on first use: they run the component's own model check, so they
load its extension (``_core``); nothing else here does.
"""

from __future__ import annotations

import importlib
from typing import Any

from .archive import read_metadata
from .builtin import builtin_name
from .export import export, export_mind
from .mind import MIND, VARIANTS, field_of_view, mind_model
from .store import ModelNotAvailableError, ModelStore, fetch

_LAZY = {"ModelInfo": "inspection", "inspect": "inspection"}
__all__ = [
    "MIND",
    "VARIANTS",
    "ModelInfo",
    "ModelNotAvailableError",
    "ModelStore",
    "builtin_name",
    "export",
    "export_mind",
    "fetch",
    "field_of_view",
    "inspect",
    "mind_model",
    "read_metadata",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'impact_elastix.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
