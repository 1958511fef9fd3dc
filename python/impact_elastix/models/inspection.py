"""What a TorchScript feature extractor expects and gives, measured rather than assumed.

``inspect(path)`` finds the input dimension and channels (from the ``impact.json`` that ``export``
stores, else from the first convolution's weight, else by probing), then runs the component's own
model check (``_core.inspect_model``): per output its channels, stride, and the field of view
measured as the gradient support of a centre voxel, i.e. the minimal valid Jacobian ``PatchSize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import _core
from ..parameter_object import size_text
from .archive import input_signature, read_metadata
from .builtin import builtin_name


@dataclass(frozen=True)
class ModelOutput:
    """What ``inspect_model`` measured for one output."""

    index: int
    channels: int
    stride: tuple[int, ...]
    field_of_view: tuple[int, ...]


def inspect_model(path: str | Path, dimension: int, channels: int = 1) -> list[ModelOutput]:
    """Runs the model once on a random probe; per output its channels, stride and field of view (x first)."""
    name = builtin_name(path)
    if name is None and not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return [
        ModelOutput(o["output"], o["channels"], tuple(o["stride"]), tuple(o["field_of_view"]))
        for o in _core.inspect_model(name or str(path), dimension, channels)
    ]


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    dimension: int
    channels: int
    outputs: list[ModelOutput]
    metadata: dict | None

    @property
    def minimal_patch_size(self) -> tuple[int, ...]:
        """The largest field of view over the outputs, per axis (x first)."""
        return tuple(max(o.field_of_view[a] for o in self.outputs) for a in range(self.dimension))

    def table(self) -> str:
        head = f"{self.path}: {self.dimension}D, {self.channels} input channel(s), {len(self.outputs)} output(s)"
        rows = [f"{'output':>6}  {'channels':>8}  {'stride':>10}  {'field of view':>14}"]
        for o in self.outputs:
            rows.append(
                f"{o.index:>6}  {o.channels:>8}  {'x'.join(map(str, o.stride)):>10}  "
                f"{'x'.join(map(str, o.field_of_view)):>14}"
            )
        prep = (self.metadata or {}).get("preprocessing") or "not recorded"
        patch = f"minimal Jacobian PatchSize: {size_text(self.minimal_patch_size)}"
        return "\n".join([head, *rows, patch, f"preprocessing: {prep}"])


def inspect(path: str | Path, dimension: int | None = None, channels: int | None = None) -> ModelInfo:
    """Dimension, input channels and per-output channels / stride / measured field of view."""
    builtin = builtin_name(path)
    if builtin is not None:  # MIND is defined for one channel in 2D and 3D
        return ModelInfo(Path(builtin), dimension or 3, 1, inspect_model(builtin, dimension or 3, 1), None)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    metadata = read_metadata(path)
    if metadata is not None:
        dimension = dimension or int(metadata["dimension"])
        channels = channels or int(metadata["channels"])
    if dimension is None or channels is None:
        guess = input_signature(torch.jit.load(str(path), map_location="cpu"))
        if guess is not None:
            dimension = dimension or guess[0]
            channels = channels or guess[1]
    if dimension is not None and channels is not None:
        return ModelInfo(path, dimension, channels, inspect_model(path, dimension, channels), metadata)
    errors = []
    for d in [dimension] if dimension else [3, 2]:
        for c in [channels] if channels else [1, 3]:
            try:
                return ModelInfo(path, d, c, inspect_model(path, d, c), metadata)
            except (RuntimeError, ValueError) as error:
                errors.append(f"{d}D/{c} channel(s): {str(error).splitlines()[0]}")
    raise ValueError(f"{path}: no input dimension/channels fit; pass them explicitly. Tried " + "; ".join(errors))
