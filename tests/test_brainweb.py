"""Real multimodal 3D MRI (a committed BrainWeb T1/PD crop, tests/data/brainweb): T1 warped by a
known smooth deformation against PD, registered with the built-in 3D MIND and with a 2D MIND on
the 3D images; the dense error over the crop must fall well below the start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from impact_elastix.mha import read_mha
from impact_elastix.parameter_object import DEFAULT_RANDOM_SEED
from impact_elastix.registration import elastix_registration_method

from benchmarks.cases import Case, _synthetic

CROP = Path(__file__).parent / "data" / "brainweb"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    t1, geometry = read_mha(CROP / "T1_crop.mha")
    pd, _ = read_mha(CROP / "PD_crop.mha")
    t1, pd = t1.astype(np.float32), pd.astype(np.float32)
    inner = np.zeros(t1.shape, dtype=bool)
    inner[6:-6, 8:-8, 8:-8] = True  # away from the crop's border, where nothing constrains the field
    return _synthetic(
        "BrainWeb crop",
        (t1 - t1.mean()) / t1.std(),
        geometry,
        tmp_path_factory.mktemp("brainweb"),
        grid_mm=24,
        sigma_mm=9.0,
        moving_image=(pd - pd.mean()) / pd.std(),
        foreground=inner,
    )


def _register(case: Case, metric: dict, out: Path) -> float:
    params = {
        "Transform": "BSplineTransform",
        "FinalGridSpacingInPhysicalUnits": 16,
        "NumberOfResolutions": 2,
        "FixedImagePyramid": "FixedSmoothingImagePyramid",
        "MovingImagePyramid": "MovingSmoothingImagePyramid",
        "MaximumNumberOfIterations": 100,
        "NumberOfSpatialSamples": 1000,
        "NumberOfSamplesForExactGradient": 2000,
        "ImageSampler": "RandomCoordinate",
        "Optimizer": "AdaptiveStochasticGradientDescent",
        "RandomSeed": DEFAULT_RANDOM_SEED,
        "Metric": "Impact",
        "NumberOfChannels": "1",
        "LayersMask": "1",
        "SubsetFeatures": "0",
        "Distance": "L2",
    } | metric
    elastix_registration_method(str(case.fixed), str(case.moving), parameter_object=params, output_directory=out)
    return case.evaluate(out / "TransformParameters.0.txt")["field_error_mm"]


MIND3D = {"ModelsPath": "MIND/R1D2", "Dimension": "3", "VoxelSize": "1*1*1"}


@pytest.mark.parametrize(
    "name, metric",
    [
        ("builtin-3d-static", MIND3D | {"Mode": "Static", "PatchSize": "0*0*0"}),
        ("builtin-3d-jacobian", MIND3D | {"Mode": "Jacobian", "PatchSize": "7*7*7"}),
        ("builtin-2d-on-3d", {"ModelsPath": "MIND/R1D2", "Dimension": "2", "VoxelSize": "1*1", "PatchSize": "7*7"}),
    ],
)
def test_mind_registers_real_multimodal_mri(case: Case, tmp_path: Path, name: str, metric: dict) -> None:
    start = case.evaluate(None)["field_error_mm"]
    error = _register(case, metric, tmp_path)
    assert start > 2.0, start  # the deformation is not trivial
    assert error < 0.5 * start, (name, start, error)
