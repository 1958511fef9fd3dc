"""The maps that the examples, tests and benchmarks register with: a B-spline registration around a
metric block, and the IMPACT block in the IMPACT README's spelling. ``parameter_object.write_parameter_file``
writes them."""

from __future__ import annotations

from pathlib import Path

from .parameter_object import DEFAULT_RANDOM_SEED, MapLike

__all__ = ["bspline_map", "impact_metric"]


def bspline_map(metric: MapLike, *, resolutions: int = 2, iterations: int = 50, samples: int = 1000) -> dict:
    """A B-spline registration map (ASGD, random coordinates) around a metric block."""
    base: dict = {
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "Registration": "MultiResolutionRegistration",
        "FixedImagePyramid": "FixedSmoothingImagePyramid",
        "MovingImagePyramid": "MovingSmoothingImagePyramid",
        "Interpolator": "BSplineInterpolator",
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "Resampler": "DefaultResampler",
        "Optimizer": "AdaptiveStochasticGradientDescent",
        "Transform": "BSplineTransform",
        "HowToCombineTransforms": "Compose",
        "FinalGridSpacingInPhysicalUnits": 16,
        "NumberOfResolutions": resolutions,
        "MaximumNumberOfIterations": iterations,
        "ImageSampler": "RandomCoordinate",
        "NumberOfSpatialSamples": samples,
        "NewSamplesEveryIteration": True,
        "CheckNumberOfSamples": True,
        "RandomSeed": DEFAULT_RANDOM_SEED,
        # ASGD's step-size estimation takes one "exact" gradient over this many samples (elastix's
        # default is 100000): each is a patch through the network, and a few thousand suffice.
        "NumberOfSamplesForExactGradient": 4000,
        "WriteResultImage": False,
        "ResultImageFormat": "mha",
    }
    base.update(metric)
    return base


def impact_metric(
    model: str | Path,
    *,
    mode: str = "Jacobian",
    patch_size: str = "5*5*5",
    voxel_size: str = "1.5*1.5*1.5",
    layers_mask: str = "1",
    subset_features: int = 32,
    distance: str = "L2",
    dimension: int = 3,
) -> dict:
    """The IMPACT metric block for one model, in the IMPACT README's spelling (``ModelsPath``,
    ``PatchSize "5*5*5"``)."""
    return {
        "Metric": "Impact",
        "ModelsPath": str(model),
        "Dimension": str(dimension),
        "NumberOfChannels": "1",
        "PatchSize": patch_size,
        "VoxelSize": voxel_size,
        "LayersMask": layers_mask,
        "SubsetFeatures": str(subset_features),
        "LayersWeight": "1",
        "Mode": mode,
        "GPU": -1,
        "PCA": "0",
        "Distance": distance,
        "FeaturesMapUpdateInterval": -1,
        "WriteFeatureMaps": "false",
    }
