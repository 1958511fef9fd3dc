"""The itk-elastix-compatible API, the CLI and itk-elastix itself, on the elastix test data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import itk
import numpy as np
import pytest
from impact_elastix import (
    ElastixError,
    FeatureModel,
    ParameterObject,
    elastix_registration_method,
    impact_parameter_map,
    presets,
    transformix_deformation_field,
    transformix_filter,
    transformix_jacobian,
    transformix_pointset,
)
from impact_elastix.images import to_itk
from impact_elastix.parameter_object import DEFAULT_RANDOM_SEED, write_parameter_file

from benchmarks.measure import impact_statistics
from examples.lung import landmark_tre, lung_case

SHIFT = np.array([3.0, -2.0])  # mm: the moving image is the fixed image moved by this


@pytest.fixture(scope="module")
def pair(data: Path) -> tuple[object, object]:
    """The 2D brain MRI (spacing 0.9 x 1.1 mm) and the same image moved by SHIFT: T(x) = x + SHIFT."""
    array = itk.array_from_image(itk.imread(str(data / "2DMRI-T1_brain.mha"), itk.F))
    origin = np.array([-10.25, 4.5])
    return to_itk(array, (0.9, 1.1), origin, np.eye(2)), to_itk(array.copy(), (0.9, 1.1), origin + SHIFT, np.eye(2))


def _translation_map(iterations: int = 150) -> dict:
    m = ParameterObject.GetDefaultParameterMap("translation", 2)
    m["MaximumNumberOfIterations"] = (str(iterations),)
    m["AutomaticTransformInitialization"] = ("false",)
    m["RandomSeed"] = (str(DEFAULT_RANDOM_SEED),)
    return m


def _translation(po: object, index: int = -1) -> np.ndarray:
    n = po.GetNumberOfParameterMaps()
    return np.array([float(v) for v in po.GetParameter(index % n, "TransformParameters")])


def test_agrees_with_itk_elastix(pair: tuple) -> None:
    fixed, moving = pair
    theirs = itk.ParameterObject.New()
    theirs.AddParameterMap(_translation_map())
    result, transform = elastix_registration_method(fixed, moving, parameter_object=theirs, number_of_threads=2)
    expected_result, expected = itk.elastix_registration_method(
        fixed, moving, parameter_object=theirs, number_of_threads=2
    )
    assert type(transform) is type(expected)  # itk.ParameterObject in, itk.ParameterObject out
    np.testing.assert_allclose(_translation(transform), _translation(expected), atol=1e-6)
    np.testing.assert_allclose(_translation(transform), SHIFT, atol=0.05)
    assert type(result) is type(expected_result)
    assert tuple(result.GetSpacing()) == tuple(fixed.GetSpacing()) and tuple(result.GetOrigin()) == (-10.25, 4.5)
    np.testing.assert_allclose(itk.array_from_image(result), itk.array_from_image(expected_result), atol=1e-3)
    # Our result transform drives itk-elastix's transformix, and ours, to the same image.
    ours = transformix_filter(moving, transform)
    np.testing.assert_allclose(
        itk.array_from_image(ours), itk.array_from_image(itk.transformix_filter(moving, transform)), atol=1e-3
    )


def test_impact_with_mind_recovers_the_shift(pair: tuple, mind2d: Path, tmp_path: Path) -> None:
    fixed, moving = pair
    params = impact_parameter_map(
        FeatureModel(mind2d, dimension=2, voxel_size=(0.9, 1.1), subset_features=0),
        dimension=2,
        transform="TranslationTransform",
        number_of_resolutions=2,
        iterations=100,
        samples=1000,
    )
    assert params["PatchSize"] == ("7*7", "7*7")  # R1D2's measured field of view, at both levels
    result, transform = elastix_registration_method(
        fixed,
        moving,
        parameter_object=[params],
        output_directory=tmp_path,
        log_to_file=True,
        log_file_name="run.log",
    )
    np.testing.assert_allclose(_translation(transform), SHIFT, atol=0.3)
    assert isinstance(transform, ParameterObject)
    assert (tmp_path / "run.log").exists() and (tmp_path / "TransformParameters.0.txt").exists()
    stats = impact_statistics((tmp_path / "run.log").read_text())  # the per-level work line the benchmarks read
    assert stats["forward"] == 2 * stats["samples"] > 0 and 0 < stats["backward"] <= stats["samples"]


def test_transformix_outputs(pair: tuple, tmp_path: Path) -> None:
    fixed, moving = pair
    transform = ParameterObject([_translation_map()])
    transform.SetParameterMap(
        {
            "Transform": "TranslationTransform",
            "NumberOfParameters": 2,
            "TransformParameters": SHIFT.tolist(),
            "InitialTransformParameterFileName": "NoInitialTransform",
            "HowToCombineTransforms": "Compose",
            "FixedImageDimension": 2,
            "MovingImageDimension": 2,
            "FixedInternalImagePixelType": "float",
            "MovingInternalImagePixelType": "float",
            "Size": [256, 256],
            "Index": [0, 0],
            "Spacing": [0.9, 1.1],
            "Origin": [-10.25, 4.5],
            "Direction": [1, 0, 0, 1],
            "UseDirectionCosines": "true",
            "ResampleInterpolator": "FinalBSplineInterpolator",
            "FinalBSplineInterpolationOrder": 3,
            "Resampler": "DefaultResampler",
            "DefaultPixelValue": 0,
            "ResultImagePixelType": "float",
        }
    )
    warped = transformix_filter(moving, transform)
    np.testing.assert_allclose(itk.array_from_image(warped), itk.array_from_image(fixed), atol=1e-3)
    assert tuple(warped.GetOrigin()) == (-10.25, 4.5)

    field = transformix_deformation_field(moving, transform)
    vectors = itk.array_from_image(field)
    assert vectors.shape == (256, 256, 2)
    np.testing.assert_allclose(vectors.reshape(-1, 2), np.broadcast_to(SHIFT, (256 * 256, 2)), atol=1e-5)

    full, det = transformix_jacobian(moving, transform)
    np.testing.assert_allclose(itk.array_from_image(det), 1.0, atol=1e-6)
    np.testing.assert_allclose(itk.array_from_image(full).reshape(-1, 4)[0], [1, 0, 0, 1], atol=1e-6)

    points = tmp_path / "points.txt"
    points.write_text("point\n2\n0 0\n12.5 -3.25\n")
    mapped = transformix_pointset(moving, transform, fixed_point_set_file_name=points, reduce_output=True)
    np.testing.assert_allclose(mapped, np.array([[0, 0], [12.5, -3.25]]) + SHIFT, atol=1e-4)
    rows = transformix_pointset(moving, transform, fixed_point_set_file_name=points)
    assert rows.dtype.kind == "U" and rows.shape[0] == 2 and "OutputPoint" in rows[0]

    # NumPy in, NumPy out; a (z, y, x, D) field for NumPy.
    out = transformix_filter(itk.array_from_image(moving), transform)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


def test_initial_transform_object_comes_first_as_in_itk_elastix(pair: tuple) -> None:
    fixed, moving = pair
    first = _translation_map()
    _, initial = elastix_registration_method(fixed, moving, parameter_object=[first])
    _, transform = elastix_registration_method(
        fixed, moving, parameter_object=[_translation_map()], initial_transform_parameter_object=initial
    )
    assert transform.GetNumberOfParameterMaps() == 2
    assert transform.GetParameter(1, "InitialTransformParameterFileName") == ("",)
    assert transform.GetParameterMap(0) == initial.GetParameterMap(0)
    total = _translation(transform, 0) + _translation(transform, 1)
    np.testing.assert_allclose(total, SHIFT, atol=0.05)


def test_relative_initial_transform_becomes_absolute(
    pair: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """elastix resolves a relative InitialTransformParameterFileName against the transform file's folder."""
    fixed, moving = pair
    _, first = elastix_registration_method(fixed, moving, parameter_object=[_translation_map(20)])
    first.WriteParameterFile(tmp_path / "initial.txt")
    monkeypatch.chdir(tmp_path)
    _, transform = elastix_registration_method(
        fixed, moving, parameter_object=[_translation_map(20)], initial_transform_parameter_file_name="initial.txt"
    )
    assert transform.GetParameter(0, "InitialTransformParameterFileName") == (str(tmp_path / "initial.txt"),)


def test_cli_and_api_give_the_same_transform(pair: tuple, tmp_path: Path) -> None:
    fixed, moving = pair
    itk.imwrite(fixed, str(tmp_path / "fixed.mha"))
    itk.imwrite(moving, str(tmp_path / "moving.mha"))
    params = write_parameter_file(_translation_map(), tmp_path / "translation.txt")
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "impact_elastix.cli",
            "register",
            "-f",
            str(tmp_path / "fixed.mha"),
            "-m",
            str(tmp_path / "moving.mha"),
            "-p",
            str(params),
            "-o",
            str(tmp_path / "cli"),
            "--threads",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "level 2/2  iteration" in cli.stderr and "done in" in cli.stderr  # progress output
    from_cli = ParameterObject.from_any(tmp_path / "cli" / "TransformParameters.0.txt")
    result, from_api = elastix_registration_method(
        tmp_path / "fixed.mha", tmp_path / "moving.mha", params, output_directory=tmp_path / "api", number_of_threads=2
    )
    assert result == tmp_path / "api" / "result.0.mha"  # a path in, a path out
    assert from_cli.GetParameter(0, "TransformParameters") == from_api.GetParameter(0, "TransformParameters")


def test_cli_help_bin_dir_and_inspect(m730: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "impact_elastix.cli", *args], capture_output=True, text=True)

    commands = [[], ["register"], ["transformix"], ["models"], ["models", "inspect"], ["models", "mind"]]
    for command in [*commands, ["models", "fetch"], ["preprocess"], ["preset"], ["bin-dir"]]:
        out = cli(*command, "--help")
        assert out.returncode == 0 and "usage: impact-elastix" in out.stdout, command
    bin_dir = Path(cli("bin-dir").stdout.strip())
    assert (bin_dir / "elastix").is_file() and (bin_dir / "transformix").is_file()
    table = cli("models", "inspect", str(m730), "--dimension", "3").stdout
    assert "1 output(s)" in table and "5x5x5" in table and "PatchSize: 5*5*5" in table and "32" in table
    bad = cli("register", "-f", "missing.mha", "-m", "missing.mha", "-p", str(m730), "-o", str(tmp_path))
    assert bad.returncode == 1 and "line 1: expected '(Name value ...)'" in bad.stderr
    params = write_parameter_file(_translation_map(), tmp_path / "p.txt")
    bad = cli("register", "-f", "missing.mha", "-m", "missing.mha", "-p", str(params), "-o", str(tmp_path))
    assert bad.returncode == 1 and "fixed_image: file not found: missing.mha" in bad.stderr


def test_elastix_errors_reach_python_with_elastix_text(pair: tuple, mind2d: Path) -> None:
    fixed, moving = pair
    params = impact_parameter_map(
        FeatureModel(mind2d, dimension=2),
        dimension=2,
        transform="TranslationTransform",
        number_of_resolutions=1,
        iterations=5,
        samples=100,
    )
    params["Distance"] = ("L3",)
    with pytest.raises(ElastixError, match='unknown distance "L3"; allowed: L1, L2'):
        elastix_registration_method(fixed, moving, parameter_object=params)
    with pytest.raises(ValueError, match="parameter_object is required"):
        elastix_registration_method(fixed, moving)
    with pytest.raises(FileNotFoundError, match="initial_transform_parameter_file_name: file not found"):
        elastix_registration_method(fixed, moving, params, initial_transform_parameter_file_name="nope.txt")
    with pytest.raises(ValueError, match="fixed_mask is empty"):
        elastix_registration_method(fixed, moving, params, fixed_mask=np.zeros((256, 256), np.uint8))


def test_impact_parameter_map_validates(m730: Path) -> None:
    with pytest.raises(ValueError, match=r"layers \[3\] of .*M730_1_Layers.pt: the model has 1 output\(s\)"):
        impact_parameter_map(FeatureModel(m730, layers=(3,)))
    with pytest.raises(ValueError, match="mode 'Dynamic' is not one of Jacobian, Static"):
        impact_parameter_map(m730, mode="Dynamic")
    with pytest.raises(ValueError, match="distance 'L3' is not one of"):
        impact_parameter_map(FeatureModel(m730, distance="L3"))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        impact_parameter_map("missing.pt")
    fused = presets.mr_ct(m730, m730, number_of_resolutions=3)
    assert fused["Mode"] == ("Static",) and fused["PatchSize"] == ("0*0*0 0*0*0",) * 3
    assert fused["Distance"] == ("Dice L2",) * 3 and fused["FixedImagePyramid"] == ("FixedGenericImagePyramid",)
    assert fused["FixedImagePyramidRescaleSchedule"] == ("1",) * 9


def test_lung_with_itk_images_and_itk_parameter_object(m730: Path, tmp_path: Path) -> None:
    """The README's five-line script: the lung CT pair, IMPACT Jacobian, from its affine start."""
    case = lung_case()
    fixed, moving = itk.imread(str(case.fixed), itk.F), itk.imread(str(case.moving), itk.F)
    parameter_object = itk.ParameterObject.New()
    parameter_object.AddParameterMap(presets.ct_cbct(m730, iterations=50))
    result, transform = elastix_registration_method(
        fixed, moving, parameter_object=parameter_object, initial_transform_parameter_file_name=str(case.affine)
    )
    assert tuple(result.GetSpacing()) == tuple(fixed.GetSpacing())
    assert transform.GetParameter(0, "InitialTransformParameterFileName") == (str(case.affine),)
    ParameterObject.from_any(transform).WriteParameterFile(tmp_path / "t.txt")
    after = landmark_tre(case, tmp_path / "t.txt").mean()
    before = landmark_tre(case, case.affine).mean()
    assert after < 0.75 * before, (before, after)


def test_progress_shows_every_level() -> None:
    import io

    from impact_elastix.cli import Progress

    stream = io.StringIO()
    progress = Progress([{"NumberOfResolutions": ("2",), "MaximumNumberOfIterations": ("3",)}], stream)
    lines = ['Running elastix with parameter file 0: "p.txt".']
    for level in (0, 1):
        lines += [f"Resolution: {level}", "1:ItNr\t2:Metric\t3a:Time"] + [f"{i}\t-0.5\t0.1" for i in range(3)]
        lines += ["Stopping condition: Maximum number of iterations has been reached."]
    for line in lines:
        progress(line)
    text = stream.getvalue()
    assert "level 1/2  iteration 1/3" in text and "level 2/2  iteration 1/3" in text


def test_static_maps_are_reused_by_a_level_with_the_same_inputs(pair: tuple, mind2d: Path, tmp_path: Path) -> None:
    """impact_parameter_map's pyramid neither smooths nor resamples: level 2 reuses level 1's feature maps."""
    fixed, moving = pair
    params = impact_parameter_map(
        FeatureModel(mind2d, dimension=2, voxel_size=(0.9, 1.1), subset_features=0),
        dimension=2,
        mode="Static",
        transform="TranslationTransform",
        number_of_resolutions=2,
        iterations=60,
        samples=500,
    )
    _, transform = elastix_registration_method(
        fixed, moving, parameter_object=params, output_directory=tmp_path, log_to_file=True
    )
    log = (tmp_path / "elastix.log").read_text()
    assert log.count("feature maps reused") == 1
    assert log.count("IMPACT Static: features of model") == 1
    np.testing.assert_allclose(_translation(transform), SHIFT, atol=0.3)
    # A smoothing pyramid changes the images between levels: no reuse.
    params["FixedImagePyramid"] = ("FixedSmoothingImagePyramid",)
    params["MovingImagePyramid"] = ("MovingSmoothingImagePyramid",)
    for key in ("Fixed", "Moving"):
        del params[f"{key}ImagePyramidSmoothingSchedule"], params[f"{key}ImagePyramidRescaleSchedule"]
    elastix_registration_method(fixed, moving, parameter_object=params, output_directory=tmp_path, log_to_file=True)
    assert "feature maps reused" not in (tmp_path / "elastix.log").read_text()
