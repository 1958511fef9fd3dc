"""The engine's dS/dy against finite differences of S, in both modes, for every distance.

Finite differences need a smooth S: the per-distance checks use a small smooth TorchScript model
(conv + tanh); the real models (M730 with LeakyReLU, MIND with min/clamp) have kinks and are
checked with L2 only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from impact_elastix import _core
from impact_elastix.torch.distances import NAMES

DISTANCES = list(NAMES)
# |f - m| has a kink wherever a feature difference changes sign, which biases finite differences
# (more the larger the step, float32 noise grows the smaller): L1 and L1Cosine get a loose bound.
# The chain rule itself is checked tightly by the smooth distances.
TOLERANCE = {"L1": 0.25, "L1Cosine": 0.25}


class Smooth(torch.nn.Module):
    def __init__(self, dimension: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = (torch.nn.Conv3d if dimension == 3 else torch.nn.Conv2d)(1, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.conv(x))]


@pytest.fixture(scope="module")
def smooth(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    paths = {}
    for dimension in (2, 3):
        paths[dimension] = tmp_path_factory.mktemp("models") / f"smooth{dimension}d.pt"
        torch.jit.script(Smooth(dimension)).save(str(paths[dimension]))
    return paths


def interior_points(geometry: dict, n: int, margin: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor(geometry["size"], dtype=torch.float64)
    spacing = torch.tensor(geometry["spacing"], dtype=torch.float64)
    origin = torch.tensor(geometry["origin"], dtype=torch.float64)
    index = margin + torch.rand(n, len(size), generator=g, dtype=torch.float64) * (size - 1 - 2 * margin)
    return origin + index * spacing  # identity direction in the test data


def directional_check(engine: _core.Engine, x: torch.Tensor, y: torch.Tensor, h: float) -> tuple[float, float]:
    """(analytic, finite-difference) derivative of S along a random direction of all y_i."""
    value, gradient = engine.evaluate(x, y, True)
    assert gradient.shape == y.shape and gradient.dtype == torch.float64
    v = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    plus, _ = engine.evaluate(x, y + h * v, False)
    minus, _ = engine.evaluate(x, y - h * v, False)
    assert value == pytest.approx(engine.evaluate(x, y, False)[0], rel=1e-5)
    return float((gradient * v).sum()), (plus - minus) / (2 * h)


@pytest.mark.parametrize("distance", DISTANCES)
def test_jacobian_mode_gradient_2d(brain: tuple, smooth: dict, distance: str) -> None:
    image, geometry = brain
    params = {
        "ModelsPath": [str(smooth[2])],
        "Dimension": ["2"],
        "PatchSize": ["7*7"],
        "VoxelSize": ["1*1"],
        "SubsetFeatures": ["0"],
        "Distance": [distance],
        "Mode": ["Jacobian"],
    }
    engine = _core.Engine(params, 0, image, geometry, image, geometry)
    x = interior_points(geometry, 64, 8, seed=0)
    analytic, numeric = directional_check(engine, x, x + 1.3, h=0.005 if distance in TOLERANCE else 0.01)
    assert analytic == pytest.approx(numeric, rel=TOLERANCE.get(distance, 0.03))


@pytest.mark.parametrize("mode", ["Jacobian", "Static"])
@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_3d(lung_crop: tuple, smooth: dict, mode: str, distance: str) -> None:
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    params = {
        "ModelsPath": [str(smooth[3])],
        "PatchSize": ["5*5*5" if mode == "Jacobian" else "0*0*0"],
        "VoxelSize": ["1.5*1.5*1.5"],
        "SubsetFeatures": ["0"],
        "Distance": [distance],
        "Mode": [mode],
    }
    engine = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry)
    x = interior_points(fixed_geometry, 128 if mode == "Jacobian" else 200, 6, seed=1)
    analytic, numeric = directional_check(engine, x, x + 0.7, h=0.005 if distance in TOLERANCE else 0.01)
    assert analytic == pytest.approx(numeric, rel=TOLERANCE.get(distance, 0.03))


def test_jacobian_mode_gradient_real_model(lung_crop: tuple, m730: Path) -> None:
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    params = {"ModelsPath": [str(m730)], "SubsetFeatures": ["0"], "Distance": ["L2"]}
    engine = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry)
    x = interior_points(fixed_geometry, 32, 6, seed=1)
    analytic, numeric = directional_check(engine, x, x + 0.7, h=0.02)
    assert analytic == pytest.approx(numeric, rel=0.05)


def test_jacobian_chunks_add_up_to_one_batch(lung_crop: tuple, m730: Path) -> None:
    """A memory budget splits the samples into chunks; S and dS/dy must not change."""
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    params = {"ModelsPath": [str(m730)], "SubsetFeatures": ["0"], "Distance": ["L1"]}
    x = interior_points(fixed_geometry, 50, 6, seed=6)
    whole = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry)
    chunked = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry, max_batch_elements=1 << 21)
    (v1, g1), (v2, g2) = whole.evaluate(x, x + 0.5), chunked.evaluate(x, x + 0.5)
    assert v1 == pytest.approx(v2, rel=1e-5)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-8)


class Local(torch.nn.Module):
    """A strictly local 2D model: a valid (unpadded) convolution, optionally strided, and tanh."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.conv(x))]


@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (5, 1), (2, 2)])
@pytest.mark.parametrize("tile", ["32*32", "40*56"])
def test_static_tiles_match_the_whole_image(brain: tuple, tmp_path: Path, kernel: int, stride: int, tile: str) -> None:
    """Tiled feature maps equal the whole-image ones: every tile output lands on the voxel the whole
    image's output has there (shift, stride, blending weights), so S and dS/dy agree to float32
    rounding. A local model with unpadded convolutions makes that exact; MIND is not used here, as
    its variance clamp depends on the mean over each input (tile or image), as in the reference."""
    image, geometry = brain
    model = tmp_path / f"local{kernel}{stride}.pt"
    torch.jit.script(Local(kernel, stride)).save(str(model))
    base = {
        "ModelsPath": [str(model)],
        "Dimension": ["2"],
        "VoxelSize": ["1*1"],
        "SubsetFeatures": ["0"],
        "Mode": ["Static"],
        "Distance": ["L2"],
    }
    whole = _core.Engine({**base, "PatchSize": ["0*0"]}, 0, image, geometry, image, geometry)
    tiled = _core.Engine({**base, "PatchSize": [tile]}, 0, image, geometry, image, geometry)
    x = interior_points(geometry, 300, 12, seed=3)
    (vw, gw), (vt, gt) = whole.evaluate(x, x + 2.0), tiled.evaluate(x, x + 2.0)
    assert vw > 0.01  # misaligned: a similarity far from zero, so that the comparison means something
    assert vt == pytest.approx(vw, rel=1e-5)
    torch.testing.assert_close(gt, gw, rtol=1e-5, atol=1e-6 * float(gw.abs().max()))


def test_value_is_zero_at_identity_and_grows_with_misalignment(lung_crop: tuple, m730: Path) -> None:
    fixed, fixed_geometry, _, _ = lung_crop
    params = {"ModelsPath": [str(m730)], "SubsetFeatures": ["0"]}
    engine = _core.Engine(params, 0, fixed, fixed_geometry, fixed, fixed_geometry)
    x = interior_points(fixed_geometry, 64, 6, seed=4)
    values = [engine.evaluate(x, x + shift, False)[0] for shift in (0.0, 1.0, 3.0)]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert values[0] < values[1] < values[2]


def test_random_seed_makes_subsets_reproducible(lung_crop: tuple, m730: Path) -> None:
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    params = {"ModelsPath": [str(m730)], "SubsetFeatures": ["8"]}
    x = interior_points(fixed_geometry, 32, 6, seed=5)
    runs = []
    for seed in (7, 7, 8):
        engine = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry, seed)
        runs.append([engine.evaluate(x, x, False)[0] for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_bfloat16_autocast_stays_close_to_float32(
    lung_crop: tuple, m730: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UseMixedPrecision on the CPU: bfloat16 model runs, float32 distances and float64 chain rule.

    IMPACT_CPU_BFLOAT16=1 forces the bfloat16 path, so that it is checked on CPUs without native
    bfloat16 too (emulated there: slower, same rounding). Measured on real lung patches: S within 2%,
    dS/dy with a cosine similarity above 0.99 to float32's (bfloat16 keeps 8 bits of mantissa).
    """
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    params = {"ModelsPath": [str(m730)], "SubsetFeatures": ["0"], "Distance": ["L2"]}
    x = interior_points(fixed_geometry, 200, 6, seed=9)
    y = x + torch.tensor([1.1, -0.6, 0.8], dtype=torch.float64)
    v32, g32 = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry).evaluate(x, y)
    monkeypatch.setenv("IMPACT_CPU_BFLOAT16", "1")
    mixed = {**params, "UseMixedPrecision": ["true"]}
    v16, g16 = _core.Engine(mixed, 0, fixed, fixed_geometry, moving, moving_geometry).evaluate(x, y)
    assert v16 == pytest.approx(v32, rel=0.02)
    assert float(torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)) > 0.99
    assert v16 != v32  # the reduced precision really ran
    monkeypatch.setenv("IMPACT_CPU_BFLOAT16", "0")  # a CPU without bfloat16: float32, bit for bit
    v, g = _core.Engine(mixed, 0, fixed, fixed_geometry, moving, moving_geometry).evaluate(x, y)
    assert v == v32
    torch.testing.assert_close(g, g32, rtol=0, atol=0)
