"""A TorchScript file as an archive: its members, the ``impact.json`` that ``export`` stores, and
the input layout read from its first convolution. No model code runs and nothing is unpickled
(``input_signature`` takes a loaded module)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from .export import METADATA


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
