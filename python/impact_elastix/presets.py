"""The IMPACT documentation's recommended set-ups, as ready parameter maps.

- ``ct_cbct``: CT/CBCT. Early feature layers + Jacobian mode: early layers of segmentation networks
  denoise and bring out anatomy across modalities, and Jacobian mode keeps features responsive to
  the deformation.
- ``mr_ct``: MR/CT. A high-level layer + Static mode, fused with MIND: the deep layer behaves like
  contour/segmentation-driven alignment, MIND recovers the structure inside organs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .impact_map import FeatureModel, impact_parameter_map
from .parameter_object import ParameterMap


def ct_cbct(
    model: str | Path,
    *,
    layers: tuple[int, ...] = (0,),
    voxel_size: float = 1.5,
    number_of_resolutions: int = 2,
    iterations: int = 100,
    gpu: int = -1,
) -> ParameterMap:
    """CT/CBCT: the first (early) outputs of a 3D segmentation-network stage, Jacobian mode, L2."""
    return impact_parameter_map(
        FeatureModel(model, layers=layers, voxel_size=voxel_size, distance="L2", subset_features=32),
        mode="Jacobian",
        number_of_resolutions=number_of_resolutions,
        iterations=iterations,
        gpu=gpu,
    )


def mr_ct(
    model: str | Path,
    mind: str | Path = "MIND/R1D2",
    *,
    layers: tuple[int, ...] = (-1,),
    voxel_size: float = 1.5,
    mind_voxel_size: float = 3.0,
    number_of_resolutions: int = 2,
    iterations: int = 100,
    gpu: int = -1,
) -> ParameterMap:
    """MR/CT: the last (high-level) output with Dice, Static mode, plus MIND (L2, half weight).

    ``mind``: the component's built-in 3D MIND by default (no file), or a MIND TorchScript file."""
    return impact_parameter_map(
        [
            FeatureModel(model, layers=layers, voxel_size=voxel_size, distance="Dice", subset_features=64),
            FeatureModel(mind, voxel_size=mind_voxel_size, distance="L2", weight=0.5, subset_features=16),
        ],
        mode="Static",
        number_of_resolutions=number_of_resolutions,
        iterations=iterations,
        gpu=gpu,
    )


PRESETS: dict[str, Callable[..., ParameterMap]] = {"ct-cbct": ct_cbct, "mr-ct": mr_ct}
