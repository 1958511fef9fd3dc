"""Models are checked against their parameters before any registration starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from impact_elastix import _core


def engine(params: dict, images: tuple) -> _core.Engine:
    fixed, fixed_geometry, moving, moving_geometry = images
    return _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry)


class NaNModel(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x * float("nan")]


class TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, torch.nn.functional.avg_pool3d(x, 3, 1, 1)]


@pytest.fixture()
def scripted(tmp_path: Path) -> callable:
    def save(module: torch.nn.Module, name: str) -> Path:
        path = tmp_path / name
        torch.jit.script(module).save(str(path))
        return path

    return save


def test_missing_model_file(lung_crop: tuple, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r'model file ".*nope.pt" does not exist'):
        engine({"ModelsPath": [str(tmp_path / "nope.pt")]}, lung_crop)


def test_corrupt_model_file(lung_crop: tuple, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RuntimeError, match=r'"/.*corrupt.pt" is not a TorchScript model'):
        engine({"ModelsPath": [str(bad)]}, lung_crop)


def test_layers_mask_longer_than_the_outputs(lung_crop: tuple, m730: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r'LayersMask "01" has 2 character\(s\) but model ".*M730_1_Layers.pt" '
        r"returns 1 output\(s\)",
    ):
        engine({"ModelsPath": [str(m730)], "LayersMask": ["01"]}, lung_crop)


def test_layers_mask_shorter_than_the_outputs(lung_crop: tuple, scripted: callable) -> None:
    path = scripted(TwoOutputs(), "two.pt")
    with pytest.raises(
        ValueError,
        match=r'LayersMask "1" has 1 character\(s\) but .* returns 2 output\(s\); give '
        r'one 0/1 per output, e.g. "01"',
    ):
        engine({"ModelsPath": [str(path)], "LayersMask": ["1"]}, lung_crop)


def test_patch_smaller_than_the_field_of_view(lung_crop: tuple, m730: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r'\(PatchSize "3\*3\*3"\) of model ".*" is smaller than the field of view '
        r"5\*5\*5 of its output 1; use at least 5\*5\*5",
    ):
        engine({"ModelsPath": [str(m730)], "PatchSize": ["3*3*3"]}, lung_crop)


def test_channel_mismatch(lung_crop: tuple, m730: Path) -> None:
    with pytest.raises(ValueError, match=r"failed on an input of shape \[1, 3, 5, 5, 5\].*NumberOfChannels 3"):
        engine({"ModelsPath": [str(m730)], "NumberOfChannels": ["3"]}, lung_crop)


def test_3d_model_on_2d_images(brain: tuple, m730: Path) -> None:
    image, geometry = brain
    with pytest.raises(ValueError, match=r"\(Dimension 3\) of model .* needs 3D images; these are 2D"):
        _core.Engine({"ModelsPath": [str(m730)]}, 0, image, geometry, image, geometry)


def test_model_returning_nan(lung_crop: tuple, scripted: callable) -> None:
    path = scripted(NaNModel(), "nan.pt")
    with pytest.raises(ValueError, match=r"returns NaN or Inf in output 1"):
        engine({"ModelsPath": [str(path)]}, lung_crop)


def test_gpu_without_cuda(lung_crop: tuple, m730: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(
        RuntimeError,
        match=r"\(GPU 0\) asks for a CUDA device, but the installed torch has none.*"
        r"Set \(GPU -1\)",
    ):
        engine({"ModelsPath": [str(m730)], "GPU": ["0"]}, lung_crop)
    engine({"ModelsPath": [str(m730)], "GPU": ["0"], "GPUFallback": ["true"]}, lung_crop)  # falls back


def test_fixed_and_moving_features_must_match(lung_crop: tuple, m730: Path, scripted: callable) -> None:
    path = scripted(TwoOutputs(), "two.pt")
    with pytest.raises(ValueError, match=r"cannot be compared: their features have shapes"):
        engine({"FixedModelsPath": [str(m730)], "MovingModelsPath": [str(path)], "MovingLayersMask": ["01"]}, lung_crop)


def test_mixed_precision_on_a_cpu_without_bfloat16_warns_and_runs_in_float32(
    lung_crop: tuple, m730: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("IMPACT_CPU_BFLOAT16", "0")  # as on a CPU without AVX512-BF16 or AMX
    e = engine({"ModelsPath": [str(m730)], "UseMixedPrecision": ["true"]}, lung_crop)
    assert "no native bfloat16 instructions" in capfd.readouterr().err
    x = torch.tensor([[-80.0, -50.0, -1300.0]], dtype=torch.float64)  # inside the crop
    value, gradient = e.evaluate(x, x + 1.0)
    assert gradient.dtype == torch.float64 and torch.isfinite(gradient).all()
    # float32 indeed: the same numbers as without UseMixedPrecision, bit for bit.
    value32, gradient32 = engine({"ModelsPath": [str(m730)]}, lung_crop).evaluate(x, x + 1.0)
    assert value == value32 and torch.equal(gradient, gradient32)


def test_model_checks_leave_torch_global_rng_alone(lung_crop: tuple, m730: Path) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    engine({"ModelsPath": [str(m730)]}, lung_crop)  # probes the model and measures its field of view
    torch.testing.assert_close(torch.rand(3), expected)
