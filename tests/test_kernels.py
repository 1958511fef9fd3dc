"""B-spline kernels and distances of the engine, checked against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
from impact_elastix import _core
from impact_elastix.torch.distances import NAMES

DISTANCES = list(NAMES)


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


def previous_prefilter(image: torch.Tensor) -> torch.Tensor:
    """The tensor-op prefilter the engine used before its C++ kernel (kept as the reference)."""
    z = 3.0**0.5 - 2.0
    c = image.double().clone()
    for axis in range(image.dim() - 1):
        w = c.movedim(axis, 0).clone()
        n = w.shape[0]
        if n < 2:
            continue
        w *= (1 - z) * (1 - 1 / z)
        horizon = min(n, int(math.ceil(math.log(1e-10) / math.log(abs(z)))))
        if horizon == n:
            z2n = z ** (2 * n - 2)
            s = w[0].clone()
            for k in range(1, n - 1):
                s += w[k] * (z**k + z ** (2 * n - 2 - k))
            s += w[n - 1] * z ** (n - 1)
            s /= 1 - z2n
        else:
            s = sum(w[k] * z**k for k in range(horizon))
        w[0] = s
        for k in range(1, n):
            w[k] += z * w[k - 1]
        w[n - 1] = (w[n - 1] + z * w[n - 2]) * (z / (z * z - 1))
        for k in range(n - 2, -1, -1):
            w[k] = (w[k + 1] - w[k]) * z
        c = w.movedim(0, axis)
    return c.float()


@pytest.mark.parametrize("shape", [(5, 1), (40, 3), (9, 30, 2), (3, 17, 25, 33), (20, 19, 21, 1)])
def test_prefilter_equals_the_previous_implementation(shape: tuple[int, ...]) -> None:
    # Short axes (< 18 samples) take the exact mirror sum, long ones the truncated one.
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(_core.bspline_coefficients(image), previous_prefilter(image), atol=2e-6, rtol=1e-5)


def geometry_of(size: list[int], spacing: list[float], direction: torch.Tensor) -> dict:
    d = len(size)
    return {"size": size, "origin": [-3.0 * (a + 1) for a in range(d)], "spacing": spacing,
            "direction": direction.reshape(-1).tolist()}  # fmt: skip


def rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    ("dim", "patch", "voxel", "oblique", "separable"),
    [
        (3, [5, 5, 5], [1.5, 1.5, 1.5], False, True),
        (3, [7, 3, 5], [1.0, 2.5, 0.7], False, True),  # non-cubic patch, anisotropic voxels
        (3, [5, 5, 5], [1.5, 1.5, 1.5], True, True),  # rotated image: patch axes follow its direction
        (2, [7, 9], [1.0, 1.3], False, True),
        (3, [7, 7], [1.0, 1.0], True, False),  # 2D patches on random planes through a 3D image
    ],
)
def test_patch_sampler_equals_point_sampler(
    dim: int, patch: list[int], voxel: list[float], oblique: bool, separable: bool
) -> None:
    g = torch.Generator().manual_seed(7)
    size = [23, 19, 17][:dim]
    spacing = [0.9, 1.1, 1.7][:dim]
    direction = rotation(0.4)[:dim, :dim] if oblique else torch.eye(dim, dtype=torch.float64)
    geometry = geometry_of(size, spacing, direction)
    coefficients = _core.bspline_coefficients(torch.randn(*reversed(size), 1, generator=g))
    n = 40
    origin = torch.tensor(geometry["origin"], dtype=torch.float64)
    index = torch.rand(n, dim, generator=g, dtype=torch.float64) * (torch.tensor(size) - 1)
    to_world = direction * torch.tensor(spacing, dtype=torch.float64)
    centres = origin + index @ to_world.T
    if len(patch) == dim:
        axes = direction.T[: len(patch)].contiguous()  # the image's own axes, as rows
    else:
        axes = torch.linalg.qr(torch.randn(n, 3, 2, generator=g, dtype=torch.float64))[0].transpose(1, 2)
    values, index_gradient, was_separable = _core.sample_patches(
        coefficients, geometry, centres, patch, voxel, axes, True
    )
    assert was_separable == separable
    # The same voxels through the point sampler: world offsets, x fastest.
    local = torch.stack(
        torch.meshgrid(*[(torch.arange(p, dtype=torch.float64) - (p - 1) / 2) * v for p, v in
                         zip(reversed(patch), reversed(voxel), strict=True)], indexing="ij")[::-1], -1
    ).reshape(-1, len(patch))  # fmt: skip
    world = centres[:, None, :] + local @ axes  # (N, P, D), shared or per-sample axes
    point_index = (world.reshape(-1, dim) - origin) @ torch.linalg.inv(to_world).T
    expected, expected_gradient = _core.bspline_sample(coefficients, point_index, True)
    torch.testing.assert_close(values.reshape(-1), expected[:, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(index_gradient.reshape(-1, dim), expected_gradient[:, 0], atol=1e-6, rtol=1e-6)


def test_chain_patch_gradient_is_the_chain_rule() -> None:
    g = torch.Generator().manual_seed(8)
    direction = rotation(0.3)
    geometry = geometry_of([10, 11, 12], [0.8, 1.2, 2.0], direction)
    d_patch = torch.randn(6, 27, generator=g)
    index_gradient = torch.randn(6, 27, 3, generator=g)
    world_to_index = torch.linalg.inv(direction * torch.tensor([0.8, 1.2, 2.0], dtype=torch.float64))
    expected = (d_patch.double()[..., None] * index_gradient.double()).sum(1) @ world_to_index
    torch.testing.assert_close(_core.chain_patch_gradient(d_patch, index_gradient, geometry), expected)


@pytest.mark.parametrize("shape", [(12, 15, 3), (9, 11, 13, 1), (6, 7, 8, 4)])
def test_grid_resample_equals_the_point_sampler(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(9)
    coefficients = _core.bspline_coefficients(torch.randn(*shape, generator=g))
    d = len(shape) - 1
    # x first; some positions outside the grid (mirrored), different counts per axis
    positions = [(torch.rand(5 + a, generator=g, dtype=torch.float64) * (shape[d - 1 - a] + 4) - 2).tolist()
                 for a in range(d)]  # fmt: skip
    values = _core.bspline_resample(coefficients, positions)
    assert values.shape == (*[len(p) for p in reversed(positions)], shape[-1])
    grids = torch.meshgrid(*[torch.tensor(p, dtype=torch.float64) for p in reversed(positions)], indexing="ij")
    index = torch.stack(list(reversed(grids)), -1).reshape(-1, d)
    expected, _ = _core.bspline_sample(coefficients, index)
    torch.testing.assert_close(values.reshape(-1, shape[-1]), expected, atol=1e-5, rtol=1e-5)


def test_python_and_the_component_know_the_same_distances() -> None:
    assert tuple(_core.distance_names()) == NAMES
