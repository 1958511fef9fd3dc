"""How much memory one registration needs: what each job declares so Dask does not overfill a worker.

The heuristic, calibrated on peak RSS measured on this project's test data (README, "Cohorts"):

- elastix itself: a fixed base (process, ITK, the components) plus a cost per voxel of the fixed and
  moving images (the images as float, their pyramid levels, B-spline coefficient and gradient images,
  the result image);
- IMPACT (``(Metric "Impact")``): the LibTorch runtime and model; in Static mode the feature maps of
  both images at the finest ``VoxelSize`` (image extent / voxel size) times the channels of the
  model's outputs (measured by the package's model inspection, the component's own model check; 32
  when the model cannot be inspected here) times a factor for the network's intermediate
  activations; in Jacobian mode a workspace per model for the batches of patches and their gradients.

The result is padded by a safety factor: a too small estimate packs jobs that then get OOM-killed, a
too large one only runs fewer at a time. ``memory_per_job`` / ``--memory-per-job`` override it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..mha import read_geometry
from ..parameter_object import ParameterMap

MiB = 1 << 20
BASE = 120 * MiB  # elastix on a tiny image
PER_VOXEL = 48  # bytes per voxel of fixed + moving
TORCH = 350 * MiB  # LibTorch, its thread pools and one model
ACTIVATIONS = 5  # Static: bytes per feature-map voxel = 4 (float) x channels x this
DEFAULT_CHANNELS = 32  # a model the driver cannot inspect (not visible here, a store name)
JACOBIAN = 800 * MiB  # patch batches through the network and their gradients, per model
SAFETY = 1.25

_VOXEL_SIZE_KEY = re.compile(r"^(Impact)?(Fixed|Moving)?VoxelSize\d*$")
_MODE_KEY = re.compile(r"^(Impact)?Mode\d*$")
_MODELS_KEY = re.compile(r"^(Impact)?(Fixed|Moving)?ModelsPath\d*$")


def image_extent(path: Path) -> tuple[int, list[float]]:
    """Voxel count and physical extent per axis (mm) of an image file, from its header only."""
    if path.suffix.lower() in (".mha", ".mhd"):
        g = read_geometry(path)
        return int(math.prod(int(v) for v in g.size)), [float(n * s) for n, s in zip(g.size, g.spacing, strict=True)]
    try:
        import SimpleITK as sitk
    except ImportError:
        # Without a header reader: a compressed file holds at most ~4x its size in 16-bit voxels.
        voxels = 2 * path.stat().st_size
        return voxels, [round(voxels ** (1 / 3))] * 3
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size, spacing = reader.GetSize(), reader.GetSpacing()
    return int(math.prod(size)), [float(n * s) for n, s in zip(size, spacing, strict=True)]


def _finest_voxel_size(m: ParameterMap) -> float:
    sizes = [
        float(v)
        for key, values in m.items()
        if _VOXEL_SIZE_KEY.match(key)
        for value in values
        for token in value.split()
        for v in token.split("*")
    ]
    positive = [s for s in sizes if s > 0]
    return min(positive) if positive else 1.5  # the component's default


@functools.lru_cache(maxsize=32)
def _output_channels(model: str, cwd: Path) -> int:
    """Channels over all outputs of a model file (relative paths: against elastix's working folder)."""
    path = Path(model) if Path(model).is_absolute() else cwd / model
    try:
        from ..models.inspection import inspect

        return sum(o.channels for o in inspect(path).outputs)
    except Exception:  # not visible here, not loadable here: the workers will say; estimate generously
        return DEFAULT_CHANNELS


def _impact_bytes(m: ParameterMap, fixed_extent: list[float], moving_extent: list[float], cwd: Path) -> int:
    modes = {v for key, values in m.items() if _MODE_KEY.match(key) for v in values} or {"Jacobian"}
    models = sorted({t for key, values in m.items() if _MODELS_KEY.match(key) for v in values for t in v.split()})
    total = TORCH
    if "Static" in modes:
        voxel = _finest_voxel_size(m)
        feature_voxels = sum(math.prod(e / voxel for e in extent) for extent in (fixed_extent, moving_extent))
        channels = sum(_output_channels(model, cwd) for model in models) or DEFAULT_CHANNELS
        total += int(feature_voxels * 4 * channels * ACTIVATIONS)
    if modes - {"Static"}:
        total += JACOBIAN * max(len(models), 1)
    return total


def estimate_memory(maps: Sequence[ParameterMap], fixed: Path, moving: Path, cwd: Path | None = None) -> int:
    """Bytes one elastix run of ``maps`` on this pair is expected to peak at (the largest map counts)."""
    fixed_voxels, fixed_extent = image_extent(fixed)
    moving_voxels, moving_extent = image_extent(moving)
    need = 0
    for m in maps:
        bytes_ = BASE + PER_VOXEL * (fixed_voxels + moving_voxels)
        if any("Impact" in v for v in m.get("Metric", ())):
            bytes_ += _impact_bytes(m, fixed_extent, moving_extent, cwd or Path.cwd())
        need = max(need, bytes_)
    return int(need * SAFETY)
