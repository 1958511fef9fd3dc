"""MIND and MIND-SSC as TorchScript feature extractors (Heinrich et al. 2012, 2013).

For an image I (replicated beyond its border), a patch radius r and a dilation d:

    D(x; a, b) = 1/|P| sum_{p in P} (I(x + a + p) - I(x + b + p))^2,   P = {-r..r}^dim

is the patch distance between the patches centred on x + a and x + b.

* MIND compares the centre with its axis neighbours: pairs (0, n) for n in N = {±d e_k}
  (2*dim channels).
* MIND-SSC (self-similarity context) compares the neighbours with each other: the pairs of N at
  distance sqrt(2) d (4 channels in 2D, 12 in 3D), which leaves the noisy centre voxel out.

Each descriptor channel is exp(-(D - min_c D) / V) with V = mean_c (D - min_c D), clamped to
[1e-3, 1e3] times its mean over the image (per batch item) so that flat regions stay finite. The output depends on
the input within d + r voxels of x: the field of view is 2 (r + d) + 1 voxels per axis.

Channel order: pairs follow the tensor axes (z, y, x in 3D), negative offset before positive.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

VARIANTS: dict[str, tuple[int, int]] = {"R1D1": (1, 1), "R1D2": (1, 2), "R2D1": (2, 1), "R2D2": (2, 2)}


def parse_variant(name: str) -> tuple[int, int]:
    """'R1D2' -> (radius 1, dilation 2); any RxDy with positive integers is accepted."""
    text = name.upper()
    if text.startswith("R") and "D" in text:
        radius, _, dilation = text[1:].partition("D")
        if radius.isdigit() and dilation.isdigit() and int(radius) > 0 and int(dilation) > 0:
            return int(radius), int(dilation)
    raise ValueError(f"MIND variant {name!r} is not of the form R<radius>D<dilation> (e.g. {', '.join(VARIANTS)})")


def neighbourhood(dimension: int, dilation: int) -> list[tuple[int, ...]]:
    """The 2*dimension axis offsets ±d e_k in tensor order, negative first."""
    out = []
    for axis in range(dimension):
        for sign in (-1, 1):
            offset = [0] * dimension
            offset[axis] = sign * dilation
            out.append(tuple(offset))
    return out


def pairs(dimension: int, dilation: int, ssc: bool) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The offset pairs (a, b) whose patch distance forms one channel each."""
    centre = (0,) * dimension
    hood = neighbourhood(dimension, dilation)
    if not ssc:
        return [(centre, n) for n in hood]
    return [
        (a, b)
        for a, b in itertools.combinations(hood, 2)
        if sum((u - v) ** 2 for u, v in zip(a, b, strict=True)) == 2 * dilation * dilation
    ]


def field_of_view(radius: int, dilation: int) -> int:
    """Voxels per axis that one output voxel depends on."""
    return 2 * (radius + dilation) + 1


class MIND(nn.Module):
    """MIND / MIND-SSC descriptor of a (N, C, *spatial) batch -> [(N, C*K, *spatial)].

    Every input channel is described separately (K channels each); the output has the input's
    spatial size. Returns a one-element list, the IMPACT model contract.
    """

    def __init__(self, dimension: int = 3, radius: int = 1, dilation: int = 2, ssc: bool = False) -> None:
        super().__init__()
        if dimension not in (2, 3):
            raise ValueError(f"MIND dimension {dimension} is not 2 or 3")
        if radius < 0 or dilation < 1:
            raise ValueError(f"MIND radius {radius} must be >= 0 and dilation {dilation} >= 1")
        self.dimension = dimension
        self.radius = radius
        self.dilation = dilation
        self.ssc = ssc
        pad = radius + dilation
        self.pad = pad
        # Start index of each shifted view inside the padded image, per pair and tensor axis.
        self.starts = [
            [pad - radius + o for o in a] + [pad - radius + o for o in b] for a, b in pairs(dimension, dilation, ssc)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != self.dimension + 2:
            raise ValueError(f"MIND {self.dimension}D expects (N, C, *spatial) with {self.dimension} spatial axes")
        n, c = x.shape[0], x.shape[1]
        spatial = x.shape[2:]
        image = x.reshape([n * c, 1] + list(spatial))
        padded = F.pad(image, [self.pad] * (2 * self.dimension), mode="replicate")
        extent = [s + 2 * self.radius for s in spatial]  # region the patch sums read
        distances: list[torch.Tensor] = []
        for start in self.starts:
            a = padded
            b = padded
            for axis in range(self.dimension):
                a = a.narrow(axis + 2, start[axis], extent[axis])
                b = b.narrow(axis + 2, start[self.dimension + axis], extent[axis])
            square = (a - b) ** 2
            k = 2 * self.radius + 1
            if self.dimension == 3:
                distances.append(F.avg_pool3d(square, k, stride=1))
            else:
                distances.append(F.avg_pool2d(square, k, stride=1))
        d = torch.cat(distances, 1)
        d = d - d.min(1, keepdim=True)[0]
        variance = d.mean(1, keepdim=True)
        # Per image of the batch, so that a patch's descriptor never depends on the other patches.
        level = variance.flatten(1).mean(1).reshape([-1] + [1] * (self.dimension + 1))
        variance = torch.maximum(torch.minimum(variance, level * 1000.0), level * 0.001 + 1e-12)
        mind = torch.exp(-d / variance)
        return [mind.reshape([n, c * mind.shape[1]] + list(spatial))]


def mind_model(variant: str = "R1D2", dimension: int = 3, ssc: bool = False) -> torch.jit.ScriptModule:
    """A scripted MIND module for a published variant name (R1D1, R1D2, R2D1, R2D2, or any RxDy)."""
    radius, dilation = parse_variant(variant)
    return torch.jit.script(MIND(dimension, radius, dilation, ssc))
