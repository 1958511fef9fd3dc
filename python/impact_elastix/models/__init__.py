"""Feature extractors for IMPACT: MIND descriptors, export of any PyTorch module, inspection,
the model store (``~/.IMPACT/models``, the public IMPACT model repository's names)."""

from __future__ import annotations

from .export import export
from .inspect import ModelInfo, inspect, read_metadata
from .mind import MIND, VARIANTS, field_of_view, mind_model
from .store import ModelNotAvailableError, ModelStore, fetch

__all__ = [
    "MIND",
    "VARIANTS",
    "ModelInfo",
    "ModelNotAvailableError",
    "ModelStore",
    "export",
    "export_mind",
    "fetch",
    "field_of_view",
    "inspect",
    "mind_model",
    "read_metadata",
]


def export_mind(path: str, variant: str = "R1D2", dimension: int = 3, ssc: bool = False) -> str:
    """Writes a MIND (or MIND-SSC) TorchScript model; returns the path.

    MIND is invariant to affine intensity changes, so it is recorded as needing no preprocessing."""
    from .mind import MIND, parse_variant

    radius, dilation = parse_variant(variant)
    return str(export(MIND(dimension, radius, dilation, ssc), dimension, 1, path, example_size=16))
