"""B-spline kernels and distances of the engine, checked against direct computations."""

from __future__ import annotations

import pytest
import torch
from impact_elastix import _core

DISTANCES = ["L1", "L2", "Cosine", "L1Cosine", "Dice", "NCC", "DotProduct"]


@pytest.mark.parametrize("shape", [(9, 11), (7, 8, 10)])
def test_bspline_interpolates_samples(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    image = torch.randn(*shape, 3)
    coefficients = _core.bspline_coefficients(image)
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    index = torch.stack(list(reversed(grids)), -1).reshape(-1, len(shape))  # x first
    values, _ = _core.bspline_sample(coefficients, index)
    torch.testing.assert_close(values, image.reshape(-1, 3), atol=2e-4, rtol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_bspline_gradient_matches_finite_differences(dim: int) -> None:
    torch.manual_seed(1)
    image = torch.randn(*([10] * dim), 2)
    coefficients = _core.bspline_coefficients(image)
    index = torch.rand(50, dim, dtype=torch.float64) * 7 + 1
    _, gradient = _core.bspline_sample(coefficients, index, True)
    h = 1e-3
    for axis in range(dim):
        step = torch.zeros(dim, dtype=torch.float64)
        step[axis] = h
        plus, _ = _core.bspline_sample(coefficients, index + step)
        minus, _ = _core.bspline_sample(coefficients, index - step)
        torch.testing.assert_close(gradient[:, :, axis], (plus - minus) / (2 * h), atol=2e-3, rtol=1e-3)


def test_bspline_reproduces_linear_functions_inside() -> None:
    # Mirror boundaries bend a linear function near the border; 9 voxels in, their effect is < 1e-5.
    z, y, x = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")
    image = (0.5 * x - 2.0 * y + 0.25 * z).unsqueeze(-1)
    coefficients = _core.bspline_coefficients(image)
    index = torch.rand(40, 3, dtype=torch.float64) * 5 + 9
    values, gradient = _core.bspline_sample(coefficients, index, True)
    expected = 0.5 * index[:, 0] - 2.0 * index[:, 1] + 0.25 * index[:, 2]
    torch.testing.assert_close(values[:, 0].double(), expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(
        gradient[:, 0].double(), torch.tensor([0.5, -2.0, 0.25]).expand(40, 3).double(), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("name", DISTANCES)
def test_distance_gradcheck(name: str) -> None:
    torch.manual_seed(2)
    f = torch.randn(6, 4, 3, dtype=torch.float64)
    m = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: _core.distance(name, f, m), (m,))


@pytest.mark.parametrize("name", DISTANCES)
def test_distance_is_minimal_for_equal_features(name: str) -> None:
    torch.manual_seed(3)
    f = torch.rand(20, 8) + 0.1
    same = float(_core.distance(name, f, f))
    other = float(_core.distance(name, f, torch.rand(20, 8) + 0.1))
    assert same < other


def test_distance_formulas() -> None:
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert float(_core.distance("L1", f, m)) == pytest.approx((0 + 2 + 3 + 0) / 4)
    assert float(_core.distance("L2", f, m)) == pytest.approx((0 + 4 + 9 + 0) / 4)
    assert float(_core.distance("DotProduct", f, m)) == pytest.approx(-(1 + 16) / 2 / 2)
    cos = torch.nn.functional.cosine_similarity(f, m, dim=1)
    assert float(_core.distance("Cosine", f, m)) == pytest.approx(float((1 - cos).mean()), abs=1e-6)


def test_unknown_distance_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match='unknown distance "L3"; allowed: L1, L2, Cosine'):
        _core.distance("L3", torch.zeros(1, 1), torch.zeros(1, 1))
