"""The contestants: one elastix map per case, identical apart from the metric block and the executable.

Ours: our elastix with our IMPACT plugin (the IMPACT README's spelling). Reference: elastix 5.3.1 built from the same
Debian source with its own Impact component (`scripts/deps.sh --reference`), 5.3.1 spelling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import impact_elastix
from impact_elastix.models.builtin import builtin_name
from impact_elastix.models.inspection import inspect_model
from impact_elastix.parameter_object import size_text

from .cases import Case


@dataclass
class Contestant:
    name: str
    bin_dir: Path
    metric: dict
    env: dict[str, str] | None = None
    model: Path | None = None
    patch: tuple[int, ...] | None = None  # Jacobian patches, for the FLOP count
    versus: str | None = None  # the contestant whose time this one is compared with


def _model_setup(model: Path) -> tuple[int, tuple[int, ...]]:
    dim = 2 if "2D" in model.name else 3
    return dim, inspect_model(model, dim)[0].field_of_view


def _voxels(case: Case, dim: int, levels: int) -> list[list[float]]:
    """Per level, the voxel size per model axis."""
    per_level = list(case.voxel) if isinstance(case.voxel, tuple) else [case.voxel] * levels
    return [[v] * dim for v in per_level]


def ours(
    case: Case, label: str, model: Path, mode: str, levels: int, mixed: bool = False, planes: str | None = None
) -> Contestant:
    dim, fov = _model_setup(model)
    voxels = _voxels(case, dim, levels)
    patch = fov if mode == "Jacobian" else (0,) * dim
    metric = {
        "Metric": "Impact",
        "ModelsPath": str(model),
        "Dimension": str(dim),
        "NumberOfChannels": "1",
        "PatchSize": size_text(patch),
        "VoxelSize": [size_text(v) for v in voxels],
        "LayersMask": "1",
        "SubsetFeatures": "32",
        "LayersWeight": "1",
        "Mode": mode,
        "GPU": -1,
        "PCA": "0",
        "Distance": "L2",
        "FeaturesMapUpdateInterval": -1,
        "WriteFeatureMaps": "false",
    }
    name = f"IMPACT {mode} {label} (ours)"
    if mixed:
        metric["UseMixedPrecision"] = "true"
    if planes is not None:
        metric["PlaneSampling"] = planes
    return Contestant(
        name + (" UseMixedPrecision" if mixed else "") + (f" PlaneSampling {planes}" if planes else ""),
        impact_elastix.bin_dir(),
        metric,
        None,
        model,
        tuple(fov) if mode == "Jacobian" else None,
        name.replace("(ours)", "(elastix 5.3.1)"),
    )


def reference(case: Case, label: str, model: Path, mode: str, prefix: Path, levels: int) -> Contestant:
    dim, fov = _model_setup(model)
    # 5.3.1 reads one voxel size per image axis in Static mode
    voxels = _voxels(case, case.dimension if mode == "Static" else dim, levels)
    patch = fov if mode == "Jacobian" else (0,) * dim
    metric: dict = {
        "Metric": "Impact",
        "ImpactMode": [mode] * levels,
        "ImpactGPU": [-1] * levels,
        "ImpactFeaturesMapUpdateInterval": [-1] * levels,
        "ImpactWriteFeatureMaps": "false",
    }
    for level in range(levels):
        metric |= {
            f"ImpactModelsPath{level}": str(model),
            f"ImpactDimension{level}": str(dim),
            f"ImpactNumberOfChannels{level}": "1",
            f"ImpactPatchSize{level}": list(patch),
            f"ImpactVoxelSize{level}": voxels[level],
            f"ImpactLayersMask{level}": "1",
            f"ImpactSubsetFeatures{level}": 32,
            f"ImpactLayersWeight{level}": 1,
            f"ImpactDistance{level}": "L2",
            f"ImpactPCA{level}": 0,
        }
    torch_lib = Path((prefix / "torch-prefix").read_text().strip()).parents[1] / "lib"  # torch/share/cmake
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(prefix / "lib"), str(torch_lib), env.get("LD_LIBRARY_PATH", "")])
    return Contestant(
        f"IMPACT {mode} {label} (elastix 5.3.1)",
        prefix / "bin",
        metric,
        env,
        model,
        tuple(fov) if mode == "Jacobian" else None,
    )


def intensity(name: str, metric: str) -> Contestant:
    return Contestant(name, impact_elastix.bin_dir(), {"Metric": metric})


def contestants(case: Case, reference_prefix: Path | None, levels: int) -> list[Contestant]:
    out = [
        intensity("AdvancedMattesMutualInformation", "AdvancedMattesMutualInformation"),
        intensity("AdvancedNormalizedCorrelation", "AdvancedNormalizedCorrelation"),
    ]
    for label, model in case.models.items():
        for mode in case.modes.get(label, ("Jacobian", "Static")):
            out.append(ours(case, label, model, mode, levels))
            if mode == "Jacobian" and _model_setup(model)[0] < case.dimension:  # the other plane policy
                out.append(ours(case, label, model, mode, levels, planes="Principal"))
            if case.mixed_precision:  # bfloat16 on CPUs that have it, float32 (and a log line) elsewhere
                out.append(ours(case, label, model, mode, levels, mixed=True))
            if reference_prefix is not None and builtin_name(model) is None:  # 5.3.1 needs a file
                out.append(reference(case, label, model, mode, reference_prefix, levels))
    return out
