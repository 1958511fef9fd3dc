"""What a TorchScript feature extractor expects and gives, measured rather than assumed.

``inspect(path)`` finds the input dimension and channels (from the ``impact.json`` that ``export``
stores, else from the first convolution's weight, else by probing), then runs the component's own
model check (``_core.inspect_model``): per output its channels, stride, and the field of view
measured as the gradient support of a centre voxel, i.e. the minimal valid Jacobian ``PatchSize``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..impact_map import ModelOutput, inspect_model
from .export import METADATA


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
        patch = "*".join(map(str, self.minimal_patch_size))
        prep = (self.metadata or {}).get("preprocessing") or "not recorded"
        return "\n".join([head, *rows, f"minimal Jacobian PatchSize: {patch}", f"preprocessing: {prep}"])


def torchscript_members(path: Path) -> list[str]:
    """The archive's member names; raises ValueError unless the file is a TorchScript archive.

    A TorchScript file is a zip holding compiled code (``*/code/``) next to its tensors; a plain
    ``torch.save`` checkpoint has no code and would need unpickling, which we never do.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path} is not a TorchScript file (not a zip archive: {error})") from None
    if bad is not None:
        raise ValueError(f"{path} is corrupt: member {bad} fails its CRC check")
    if not any("/code/" in n for n in names):
        raise ValueError(
            f"{path} is not a TorchScript file (no compiled code inside; a torch.save checkpoint?). "
            "Export it with impact_elastix.models.export or torch.jit.script(...).save()"
        )
    return names


def read_metadata(path: str | Path) -> dict | None:
    """The ``impact.json`` that ``export`` stored, read from the archive without loading the model."""
    path = Path(path)
    names = torchscript_members(path)
    member = next((n for n in names if n.endswith(f"/extra/{METADATA}")), None)
    if member is None:
        return None
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(member))


def input_signature(model: torch.nn.Module) -> tuple[int, int] | None:
    """(dimension, channels) from the model's first parameter when it is a 2D/3D convolution
    weight (O, I, *kernel): the input layer. None otherwise (e.g. MIND, which has no weights)."""
    first = next(iter(model.parameters()), None)
    if first is None or first.dim() not in (4, 5):
        return None
    return first.dim() - 2, int(first.shape[1])


def inspect(path: str | Path, dimension: int | None = None, channels: int | None = None) -> ModelInfo:
    """Dimension, input channels and per-output channels / stride / measured field of view."""
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
