"""impact_elastix.torch: the IMPACT loss for PyTorch, against the elastix component's own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from impact_elastix import _core
from impact_elastix.torch import DISTANCES, FeatureExtractor, ImpactLoss, distance, impact_loss
from torch import nn


class Smooth(nn.Module):
    """A small differentiable model with two outputs, one at half resolution."""

    def __init__(self, dimension: int, channels: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv = nn.Conv3d if dimension == 3 else nn.Conv2d
        self.a = conv(channels, 5, 3, padding=1)
        self.b = conv(5, 4, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.tanh(self.a(x))
        return [a, torch.tanh(self.b(a))]


@pytest.mark.parametrize("name", DISTANCES)
def test_distances_equal_the_components(name: str) -> None:
    g = torch.Generator().manual_seed(1)
    f, m = torch.randn(6, 5, 3, 4, generator=g), torch.randn(6, 5, 3, 4, generator=g)
    assert float(distance(name, f, m)) == pytest.approx(float(_core.distance(name, f, m)), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", DISTANCES)
def test_gradcheck_float64(name: str) -> None:
    model = Smooth(2).double()
    extractor = FeatureExtractor(model, 2, 1)
    fixed = torch.randn(2, 1, 6, 7, dtype=torch.float64)
    moving = torch.randn(2, 1, 6, 7, dtype=torch.float64, requires_grad=True)

    def loss(m: torch.Tensor) -> torch.Tensor:
        return impact_loss(fixed, m, [extractor], [[0, 1]], [1.0, 0.5], [name, name])

    assert torch.autograd.gradcheck(loss, (moving,), eps=1e-6, atol=1e-5)


def test_module_equals_function_and_checks_its_arguments() -> None:
    model = Smooth(3)
    fixed, moving = torch.randn(2, 1, 8, 8, 8), torch.randn(2, 1, 8, 8, 8)
    module = ImpactLoss(model, layers=[[0, 1]], weights=[1.0, 2.0], distances=["L2", "Cosine"])
    expected = impact_loss(fixed, moving, [FeatureExtractor(model, 3, 1)], [[0, 1]], [1.0, 2.0], ["L2", "Cosine"])
    assert float(module(fixed, moving)) == pytest.approx(float(expected), rel=1e-6)
    assert float(module(fixed, fixed)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="distance 'L3' is not one of"):
        ImpactLoss(model, distances="L3")
    with pytest.raises(ValueError, match="2 layer"):
        ImpactLoss(model, layers=[[0, 1]], weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must have the same shape"):
        module(fixed, moving[:, :, :4])
    with pytest.raises(ValueError, match="has 2 channels; the model takes 1"):
        module(fixed.repeat(1, 2, 1, 1, 1), moving.repeat(1, 2, 1, 1, 1))


def test_nan_features_are_named() -> None:
    fixed = torch.randn(1, 1, 10, 10)
    moving = fixed.clone()
    moving[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="layer 0 of model 0 gives a non-finite L1 distance .moving features"):
        ImpactLoss(Smooth(2))(fixed, moving)


def test_gradient_reaches_moving_only() -> None:
    fixed = torch.randn(1, 1, 10, 10)
    moving = torch.randn(1, 1, 10, 10, requires_grad=True)
    ImpactLoss(Smooth(2))(fixed, moving).backward()
    assert moving.grad is not None and moving.grad.abs().sum() > 0


def test_slice_wise_resize_replication_and_subsets() -> None:
    model2d, model3ch = Smooth(2), Smooth(2, channels=3)
    volume_f, volume_m = torch.randn(1, 1, 4, 12, 10), torch.randn(1, 1, 4, 12, 10)
    slices = ImpactLoss(model2d, dimension=2)(volume_f, volume_m)  # slice_axis 0: the 4 axial slices
    per_slice = impact_loss(
        volume_f[0].transpose(0, 1), volume_m[0].transpose(0, 1), [FeatureExtractor(model2d, 2, 1)], [[0]], [1], ["L1"]
    )
    assert float(slices) == pytest.approx(float(per_slice), rel=1e-6)
    resized = ImpactLoss(model2d, dimension=2, shape=(8, 20, 16))(volume_f, volume_m)
    up = [F.interpolate(v, size=(8, 20, 16), mode="trilinear") for v in (volume_f, volume_m)]
    assert float(resized) == pytest.approx(float(ImpactLoss(model2d, dimension=2)(*up)), rel=1e-6)
    image_f, image_m = torch.randn(2, 1, 9, 9), torch.randn(2, 1, 9, 9)
    replicated = ImpactLoss(model3ch, channels=3)(image_f, image_m)
    explicit = ImpactLoss(model3ch, channels=3)(image_f.expand(-1, 3, -1, -1), image_m.expand(-1, 3, -1, -1))
    assert float(replicated) == pytest.approx(float(explicit), rel=1e-6)
    a = ImpactLoss(model2d, subset_features=2, seed=5)(image_f, image_m)
    b = ImpactLoss(model2d, subset_features=2, seed=5)(image_f, image_m)
    whole = ImpactLoss(model2d)(image_f, image_m)
    assert float(a) == float(b) and float(a) != pytest.approx(float(whole), rel=1e-6)


class WithLayers(nn.Module):
    """A model of the (x, nLayers) contract: returns nLayers outputs."""

    def forward(self, x: torch.Tensor, layers: torch.Tensor) -> list[torch.Tensor]:
        return [x * (k + 1) for k in range(int(layers))]


def test_models_that_take_the_number_of_layers() -> None:
    scripted = torch.jit.script(WithLayers())
    x, y = torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6)
    assert float(ImpactLoss(scripted, layers=[[1]], dimension=2)(x, y)) == pytest.approx(2.0)


def test_value_equals_the_elastix_metric_on_the_same_patches(lung_crop: tuple, m730: Path) -> None:
    """Patches centred on voxels, on the image grid: the metric's S is ImpactLoss on those patches."""
    fixed, geometry, moving, _ = lung_crop
    spacing = geometry["spacing"]
    g = torch.Generator().manual_seed(2)
    n = 40
    index = torch.stack([torch.randint(3, s - 3, (n,), generator=g) for s in geometry["size"]], 1)  # x, y, z
    points = torch.tensor(geometry["origin"], dtype=torch.float64) + index.double() * torch.tensor(spacing)

    def patches(image: torch.Tensor) -> torch.Tensor:
        return torch.stack([image[z - 2 : z + 3, y - 2 : y + 3, x - 2 : x + 3] for x, y, z in index.tolist()])[:, None]

    for name in ("L2", "Cosine", "NCC"):
        params = {
            "ModelsPath": [str(m730)],
            "PatchSize": ["5*5*5"],
            "VoxelSize": ["*".join(repr(s) for s in spacing)],
            "SubsetFeatures": ["0"],
            "Distance": [name],
            "LayersWeight": ["0.7"],
        }
        engine = _core.Engine(params, 0, fixed, geometry, moving, geometry)
        metric, _ = engine.evaluate(points, points, False)
        loss = ImpactLoss(m730, weights=0.7, distances=name)(patches(fixed), patches(moving))
        assert float(loss) == pytest.approx(metric, rel=2e-5), name
