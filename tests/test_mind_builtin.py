"""The built-in MIND / MIND-SSC (C++, `ModelsPath "MIND/R1D2"`): equal to the TorchScript export, a
correct input gradient, and usable by elastix without a model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from impact_elastix import _core
from impact_elastix.models import MIND, VARIANTS
from impact_elastix.models.mind import parse_variant


@pytest.mark.parametrize("ssc", [False, True], ids=["MIND", "MIND-SSC"])
@pytest.mark.parametrize("dimension", [2, 3])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_builtin_mind_equals_the_torchscript_export(variant: str, dimension: int, ssc: bool) -> None:
    radius, dilation = parse_variant(variant)
    gen = torch.Generator().manual_seed(5)
    shape = (3, 2, 17, 13) if dimension == 2 else (2, 2, 11, 9, 10)  # batch, channels, odd sizes
    x = torch.randn(shape, generator=gen).cumsum(2)
    name = f"{'MIND-SSC' if ssc else 'MIND'}/{variant}"
    expected = MIND(dimension, radius, dilation, ssc)(x)[0]
    got = _core.mind(x, name)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Names are case-insensitive.
    torch.testing.assert_close(_core.mind(x, name.lower()), got, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["MIND/R1D2", "MIND-SSC/R1D1"])
def test_builtin_mind_input_gradient(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 6, 7, 5, generator=gen, dtype=torch.float64).cumsum(2)
    # float64 in, float64 through (the descriptor keeps the input's type).
    assert torch.autograd.gradcheck(lambda t: _core.mind(t, name), (x.requires_grad_(True),), eps=1e-6, atol=1e-5)
    # The same gradient as autograd through the TorchScript export, in float32.
    radius, dilation = parse_variant(name.split("/")[1])
    x32 = x.detach().float().requires_grad_(True)
    w = torch.randn(_core.mind(x32, name).shape, generator=gen)
    (g_builtin,) = torch.autograd.grad((_core.mind(x32, name) * w).sum(), x32)
    (g_script,) = torch.autograd.grad((MIND(3, radius, dilation, "SSC" in name)(x32)[0] * w).sum(), x32)
    torch.testing.assert_close(g_builtin, g_script, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ssc", [False, True], ids=["MIND", "MIND-SSC"])
def test_whole_image_path_equals_the_torchscript_export(ssc: bool) -> None:
    """Images larger than 32^3 voxels take the tensor-operation path (the fused kernel is for
    patches): same values and input gradient as the TorchScript export."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 34, 36, 38, generator=gen).cumsum(3).requires_grad_(True)
    name = "MIND-SSC/R1D2" if ssc else "MIND/R1D2"
    script = MIND(3, 1, 2, ssc)
    got, expected = _core.mind(x, name), script(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    w = torch.randn(got.shape, generator=gen)
    (g_builtin,) = torch.autograd.grad((got * w).sum(), x)
    (g_script,) = torch.autograd.grad((expected * w).sum(), x)
    torch.testing.assert_close(g_builtin, g_script, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", ["MIND/R0D2", "MIND/RxD2", "MIND-SSC/R1", "MIND/"])
def test_malformed_builtin_names_say_the_form(bad: str) -> None:
    with pytest.raises(RuntimeError, match=r"MIND/R<radius>D<dilation>"):
        _core.inspect_model(bad, 3)


def test_builtin_mind_inspects_like_a_model() -> None:
    (info,) = _core.inspect_model("MIND/R1D2", 3)
    assert info["channels"] == 6 and info["field_of_view"] == [7, 7, 7] and info["stride"] == [1, 1, 1]
    (info,) = _core.inspect_model("MIND-SSC/R2D2", 2)
    assert info["channels"] == 4 and info["field_of_view"] == [9, 9]


def test_unknown_model_name_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="built-in models: MIND/R<r>D<d>"):
        _core.inspect_model(str(tmp_path / "missing.pt"), 3)


def test_a_file_at_the_builtin_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's own file called MIND/R1D2 (relative path) is loaded as TorchScript, not replaced."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "MIND").mkdir()
    torch.jit.script(MIND(3, 1, 1, False)).save(str(tmp_path / "MIND" / "R1D2"))
    (info,) = _core.inspect_model("MIND/R1D2", 3)
    assert info["field_of_view"] == [5, 5, 5]  # R1D1's, the file's; the built-in R1D2 sees 7


def test_elastix_registers_with_builtin_mind_and_no_model_file(tmp_path: Path) -> None:
    """A 3D pair with a known shift: the built-in MIND, in both modes, through our elastix."""
    import itk
    from impact_elastix.registration import elastix_registration_method

    gen = np.random.default_rng(0)
    z, y, x = np.mgrid[:24, :28, :26].astype(np.float32)
    blobs = sum(
        np.exp(-((z - gen.uniform(4, 20)) ** 2 + (y - gen.uniform(4, 24)) ** 2 + (x - gen.uniform(4, 22)) ** 2) / 18)
        for _ in range(12)
    )
    fixed = itk.image_from_array(blobs.astype(np.float32))
    moving = itk.image_from_array(
        np.roll(blobs, 2, axis=2).astype(np.float32) ** 0.5
    )  # shift +2 mm in x, another contrast
    for mode, patch in (("Jacobian", "7*7*7"), ("Static", "0*0*0")):
        params = {
            "Transform": "TranslationTransform",
            "Metric": "Impact",
            "ModelsPath": "MIND/R1D2",
            "Dimension": "3",
            "NumberOfChannels": "1",
            "PatchSize": patch,
            "VoxelSize": "1*1*1",
            "LayersMask": "1",
            "SubsetFeatures": "0",
            "Mode": mode,
            "Distance": "L2",
            "NumberOfResolutions": 1,
            "MaximumNumberOfIterations": 100,
            "NumberOfSpatialSamples": 500,
            "ImageSampler": "RandomCoordinate",
            "Optimizer": "AdaptiveStochasticGradientDescent",
            "AutomaticTransformInitialization": "false",
        }
        _, transform = elastix_registration_method(
            fixed, moving, parameter_object=params, output_directory=str(tmp_path / mode)
        )
        shift = [float(v) for v in transform.GetParameter(0, "TransformParameters")]
        assert abs(shift[0] - 2.0) < 0.3 and abs(shift[1]) < 0.3 and abs(shift[2]) < 0.3, (mode, shift)
