"""impact_elastix.models: MIND against a direct NumPy evaluation of its formula, export, inspect,
and a registration with an exported MIND model."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from impact_elastix import impact_parameter_map
from impact_elastix.impact_map import FeatureModel
from impact_elastix.models import MIND, VARIANTS, export, export_mind, field_of_view, inspect, read_metadata
from impact_elastix.models.mind import parse_variant
from impact_elastix.registration import elastix_registration_method
from torch import nn


def mind_numpy(image: np.ndarray, radius: int, dilation: int, ssc: bool) -> np.ndarray:
    """MIND straight from the formula, one voxel and one patch offset at a time (channels first)."""
    dim = image.ndim
    pad = radius + dilation
    ext = np.pad(image.astype(np.float64), pad, mode="edge")
    hood = []
    for axis in range(dim):
        for sign in (-1, 1):
            offset = np.zeros(dim, dtype=int)
            offset[axis] = sign * dilation
            hood.append(offset)
    if ssc:
        pairs = [(a, b) for a, b in itertools.combinations(hood, 2) if np.sum((a - b) ** 2) == 2 * dilation**2]
    else:
        pairs = [(np.zeros(dim, dtype=int), n) for n in hood]
    patch = list(itertools.product(range(-radius, radius + 1), repeat=dim))
    d = np.zeros((len(pairs), *image.shape))
    for x in np.ndindex(image.shape):
        centre = np.array(x) + pad
        for k, (a, b) in enumerate(pairs):
            d[(k, *x)] = np.mean([(ext[tuple(centre + a + p)] - ext[tuple(centre + b + p)]) ** 2 for p in patch])
    d -= d.min(0)
    v = d.mean(0)
    level = v.mean()
    v = np.maximum(np.minimum(v, 1000 * level), 0.001 * level + 1e-12)
    return np.exp(-d / v)


@pytest.mark.parametrize("ssc", [False, True], ids=["MIND", "MIND-SSC"])
@pytest.mark.parametrize("dimension", [2, 3])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mind_matches_the_formula(variant: str, dimension: int, ssc: bool) -> None:
    radius, dilation = parse_variant(variant)
    rng = np.random.default_rng(3)
    shape = (9, 11) if dimension == 2 else (6, 7, 8)
    image = rng.normal(size=shape).cumsum(0)  # some structure, some noise
    got = MIND(dimension, radius, dilation, ssc)(torch.from_numpy(image).float()[None, None])[0][0].double().numpy()
    expected = mind_numpy(image, radius, dilation, ssc)
    assert got.shape == expected.shape == ((4 if dimension == 2 else 12 if ssc else 6), *shape)
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_mind_is_invariant_to_affine_intensity_changes_and_rejects_bad_settings() -> None:
    x = torch.randn(1, 1, 20, 20)
    m = MIND(2, 1, 2)
    torch.testing.assert_close(m(x)[0], m(3 * x + 100)[0], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="R<radius>D<dilation>"):
        parse_variant("R0D2")
    with pytest.raises(ValueError, match="dimension 4"):
        MIND(4)


@pytest.fixture(scope="module")
def mind_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    folder = tmp_path_factory.mktemp("mind")
    return {(v, d): Path(export_mind(str(folder / f"{v}_{d}D.pt"), v, d)) for v in VARIANTS for d in (2, 3)}


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "impact_elastix.cli", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_inspect_measures_the_field_of_view_of_mind_and_of_the_test_models(
    mind_files: dict, m730: Path, mind2d: Path
) -> None:
    for (variant, dimension), path in mind_files.items():
        radius, dilation = parse_variant(variant)
        info = inspect(path)  # dimension and channels from the file's impact.json
        fov = field_of_view(radius, dilation)
        assert (info.dimension, info.channels, len(info.outputs)) == (dimension, 1, 1)
        assert info.outputs[0].field_of_view == (fov,) * dimension
        assert info.outputs[0].channels == (4 if dimension == 2 else 6)
    table = cli("models", "inspect", str(mind_files[("R2D2", 3)]))
    assert "9x9x9" in table and "minimal Jacobian PatchSize: 9*9*9" in table
    # The elastix test models carry no metadata: dimension and channels come from their first convolution.
    m730_info, mind_info = inspect(m730), inspect(mind2d)
    m730_out, mind_out = m730_info.outputs[0], mind_info.outputs[0]
    assert (m730_info.dimension, m730_out.channels, m730_out.field_of_view) == (3, 32, (5, 5, 5))
    assert (mind_info.dimension, mind_out.channels, mind_out.field_of_view) == (2, 4, (7, 7))
    assert "7x7" in cli("models", "inspect", str(mind2d))
    # Our R1D2 and the elastix test data's R1D2 describe the same neighbourhood: same field of view.
    assert inspect(mind_files[("R1D2", 2)]).outputs[0].field_of_view == mind_info.outputs[0].field_of_view


class Encoder(nn.Module):
    """An nnU-Net-like encoder with a head we do not want."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage0 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU())
        self.stage1 = nn.Sequential(nn.Conv3d(4, 8, 3, stride=2, padding=1), nn.LeakyReLU())
        self.head = nn.Conv3d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage1(self.stage0(x)))


def test_export_returns_the_chosen_layers_and_passes_the_component_checks(tmp_path: Path) -> None:
    encoder = Encoder().eval()
    path = export(encoder, 3, 1, tmp_path / "enc.pt", layers=["stage0", "stage1"], example_size=16, preprocessing="ct")
    x = torch.randn(2, 1, 20, 18, 22)
    with torch.no_grad():
        out = torch.jit.load(str(path))(x)
        torch.testing.assert_close(out[0], encoder.stage0(x))
        torch.testing.assert_close(out[1], encoder.stage1(encoder.stage0(x)))
    info = inspect(path)
    assert [o.channels for o in info.outputs] == [4, 8]
    assert [o.stride for o in info.outputs] == [(1, 1, 1), (2, 2, 2)]
    assert read_metadata(path)["layers"] == ["stage0", "stage1"] and "preprocessing: ct" in info.table()
    whole = export(encoder, 3, 1, tmp_path / "whole.pt")  # the module's own output, scripted
    assert inspect(whole).outputs[0].channels == 3
    with pytest.raises(ValueError, match="'nope' is not a submodule"):
        export(encoder, 3, 1, tmp_path / "bad.pt", layers=["nope"])
    with pytest.raises(TypeError, match="eager nn.Module"):
        export(torch.jit.script(encoder), 3, 1, tmp_path / "bad.pt", layers=["stage0"])


def test_inspect_rejects_files_that_are_not_torchscript(tmp_path: Path) -> None:
    checkpoint = tmp_path / "weights.pt"
    torch.save(Encoder().state_dict(), checkpoint)
    with pytest.raises(ValueError, match="not a TorchScript file"):
        inspect(checkpoint)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        inspect(tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        inspect(tmp_path / "missing.pt")


def test_exported_mind_registers_the_2d_mri_pair(mind_files: dict, tmp_path: Path) -> None:
    from benchmarks.cases import brain2d

    case = brain2d(tmp_path)
    params = impact_parameter_map(
        FeatureModel(mind_files[("R1D2", 2)], dimension=2, voxel_size=1.0, subset_features=0),
        dimension=2,
        number_of_resolutions=2,
        final_grid_spacing=16.0,
        iterations=50,
        samples=1000,
    )
    assert params["PatchSize"] == ("7*7", "7*7")
    elastix_registration_method(str(case.fixed), str(case.moving), parameter_object=[params], output_directory=tmp_path)
    before = case.evaluate(None)["field_error_mm"]
    after = case.evaluate(tmp_path / "TransformParameters.0.txt")["field_error_mm"]
    assert after < 0.3 * before, (before, after)
