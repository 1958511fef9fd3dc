"""Complete, validated IMPACT registration maps, built from models rather than from strings.

``impact_parameter_map`` measures each model's outputs and field of view, sets the minimal valid
``PatchSize``, keeps ``VoxelSize`` meaningful at every level (a pyramid that smooths nothing and
resamples nothing, as the IMPACT documentation asks: IMPACT resamples to ``VoxelSize`` itself),
and checks every level with the same parser the elastix component uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _core
from .models.builtin import builtin_name
from .models.inspection import inspect_model
from .models.store import fetch
from .parameter_object import DEFAULT_RANDOM_SEED, ParameterMap, size_text, to_parameter_map
from .torch.distances import NAMES as DISTANCES

_MODES = ("Jacobian", "Static")
_TRANSFORMS = ("BSplineTransform", "AffineTransform", "EulerTransform", "SimilarityTransform", "TranslationTransform")


@dataclass(frozen=True)
class FeatureModel:
    """One TorchScript feature extractor and how its features are compared (eq. 6 of the paper).

    ``path``: a TorchScript file, a built-in extractor (``"MIND/R1D2"``, ``"MIND-SSC/R2D2"``:
    computed by the component, no file), or a model-store name (``"TS/M730_2_Layers"``: downloaded
    once into ``~/.IMPACT/models``).
    ``layers``: 0-based indices of the model outputs to use (negative counts from the end).
    ``voxel_size``: mm per voxel at which the model sees the image (isotropic or per axis, x first).
    ``patch_size``: voxels per axis; None = the measured field of view (Jacobian mode) or the whole
    image (Static mode).
    """

    path: str | Path
    dimension: int = 3
    channels: int = 1
    layers: Sequence[int] = (-1,)
    voxel_size: float | Sequence[float] = 1.5
    patch_size: int | Sequence[int] | None = None
    distance: str = "L2"
    weight: float = 1.0
    subset_features: int = 32
    pca: int = 0


def _axes(value: float | Sequence[float], dimension: int, name: str) -> list[float]:
    values = [float(value)] * dimension if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != dimension:
        raise ValueError(f"{name} {value} has {len(values)} value(s); the model is {dimension}D")
    return values


def _model_entries(model: FeatureModel, mode: str, schedule: Sequence[float]) -> dict[str, list[str]]:
    """Per-level text entries of one model (ModelsPath, PatchSize, ... one value per level)."""
    if model.distance not in DISTANCES:
        raise ValueError(f"distance {model.distance!r} is not one of {', '.join(DISTANCES)}")
    # A built-in extractor ("MIND/R1D2"), a file, or a model-store name such as "TS/M730_2_Layers".
    builtin = builtin_name(model.path)
    path = fetch(str(model.path)) if builtin is None else None
    outputs = inspect_model(builtin or path, model.dimension, model.channels)
    n = len(outputs)
    chosen = sorted({i % n for i in model.layers if -n <= i < n})
    if len(chosen) != len(set(model.layers)) or not chosen:
        raise ValueError(
            f"layers {list(model.layers)} of {model.path}: the model has {n} output(s), indices 0..{n - 1}"
        )
    if model.patch_size is not None:
        patch = [int(v) for v in _axes(model.patch_size, model.dimension, "patch_size")]
    elif mode == "Static":
        patch = [0] * model.dimension  # the whole image at once: no patch seams
    else:
        patch = [max(outputs[i].field_of_view[a] for i in chosen) for a in range(model.dimension)]
    voxel = _axes(model.voxel_size, model.dimension, "voxel_size")
    mask = "".join("1" if i in chosen else "0" for i in range(n))
    entries = {
        "ModelsPath": builtin or str(path.resolve()),
        "Dimension": str(model.dimension),
        "NumberOfChannels": str(model.channels),
        "PatchSize": size_text(patch),
        "LayersMask": mask,
        "SubsetFeatures": " ".join([str(model.subset_features)] * len(chosen)),
        "LayersWeight": " ".join([f"{model.weight:g}"] * len(chosen)),
        "Distance": " ".join([model.distance] * len(chosen)),
        "PCA": " ".join([str(model.pca)] * len(chosen)),
    }
    out = {k: [v] * len(schedule) for k, v in entries.items()}
    out["VoxelSize"] = [size_text([v * f for v in voxel]) for f in schedule]
    return out


def impact_parameter_map(
    models: FeatureModel | str | Path | Sequence[FeatureModel | str | Path],
    *,
    dimension: int = 3,
    mode: str = "Jacobian",
    transform: str = "BSplineTransform",
    number_of_resolutions: int = 2,
    voxel_size_schedule: Sequence[float] | None = None,
    final_grid_spacing: float = 16.0,
    iterations: int = 100,
    samples: int = 2000,
    gpu: int = -1,
    features_map_update_interval: int = -1,
    random_seed: int = DEFAULT_RANDOM_SEED,
) -> ParameterMap:
    """A complete elastix parameter map registering with IMPACT.

    ``models``: one or several feature models (multi-model fusion sums their weighted terms); a path
    is ``FeatureModel(path, dimension=dimension)``. ``voxel_size_schedule``: per level, the factor
    on each model's voxel size (coarse to fine, e.g. ``[4, 2, 1]``); default 1 at every level.
    Raises ValueError naming the setting when a model, layer or value is not valid.
    """
    if mode not in _MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(_MODES)}")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform {transform!r} is not one of {', '.join(_TRANSFORMS)}")
    if dimension not in (2, 3):
        raise ValueError(f"dimension {dimension} is not supported; use 2 or 3")
    if number_of_resolutions < 1 or iterations < 1 or samples < 1:
        raise ValueError("number_of_resolutions, iterations and samples must be >= 1")
    schedule = list(voxel_size_schedule) if voxel_size_schedule is not None else [1.0] * number_of_resolutions
    if len(schedule) != number_of_resolutions or any(f <= 0 for f in schedule):
        raise ValueError(f"voxel_size_schedule {schedule} needs {number_of_resolutions} positive factor(s)")
    specs = models if isinstance(models, Sequence) and not isinstance(models, str) else [models]
    if not specs:
        raise ValueError("models is empty: give at least one model")
    specs = [m if isinstance(m, FeatureModel) else FeatureModel(m, dimension=dimension) for m in specs]
    per_model = [_model_entries(m, mode, schedule) for m in specs]
    # Several models: one space-separated entry per level ("A B"), one quoted entry per level.
    impact = {
        key: [" ".join(e[key][lvl] for e in per_model) for lvl in range(number_of_resolutions)] for key in per_model[0]
    }

    zeros = ["0"] * (number_of_resolutions * dimension)
    parameters: dict = {
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "FixedImageDimension": dimension,
        "MovingImageDimension": dimension,
        "Registration": "MultiResolutionRegistration",
        "FixedImagePyramid": "FixedGenericImagePyramid",
        "MovingImagePyramid": "MovingGenericImagePyramid",
        "FixedImagePyramidRescaleSchedule": ["1"] * (number_of_resolutions * dimension),
        "MovingImagePyramidRescaleSchedule": ["1"] * (number_of_resolutions * dimension),
        "FixedImagePyramidSmoothingSchedule": zeros,
        "MovingImagePyramidSmoothingSchedule": zeros,
        "NumberOfResolutions": number_of_resolutions,
        "Interpolator": "BSplineInterpolator",
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "Resampler": "DefaultResampler",
        "Optimizer": "AdaptiveStochasticGradientDescent",
        "Transform": transform,
        "HowToCombineTransforms": "Compose",
        "AutomaticTransformInitialization": "false",
        "MaximumNumberOfIterations": iterations,
        "ImageSampler": "RandomCoordinate",
        "NumberOfSpatialSamples": samples,
        "NewSamplesEveryIteration": "true",
        "CheckNumberOfSamples": "true",
        # Each "exact gradient" sample of ASGD's step-size estimation is a patch through the network;
        # elastix's default of 100000 costs minutes for no gain.
        "NumberOfSamplesForExactGradient": 4000,
        "RandomSeed": random_seed,
        "WriteResultImage": "true",
        "ResultImageFormat": "mha",
        "Metric": "Impact",
        "Mode": mode,
        "GPU": gpu,
        "FeaturesMapUpdateInterval": features_map_update_interval,
        "WriteFeatureMaps": "false",
    }
    if transform == "BSplineTransform":
        parameters["FinalGridSpacingInPhysicalUnits"] = final_grid_spacing
        parameters["GridSpacingSchedule"] = [
            f"{2.0 ** (number_of_resolutions - 1 - i):g}" for i in range(number_of_resolutions)
        ]
    else:
        parameters["AutomaticScalesEstimation"] = "true"
    parameters.update(impact)
    result = to_parameter_map(parameters)
    for level in range(number_of_resolutions):
        _core.parse_level(dict(result), level)  # raises ParameterError (a ValueError) naming the entry
    return result
