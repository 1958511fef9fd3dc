"""Feature distances D(f, m) of eq. 6, identical to the elastix component's (``core/Distances``).

f, m: (N, C, *spatial) features of N items; every distance is a mean over items and positions:

    L1          mean |f - m|
    L2          mean (f - m)^2
    Cosine      mean_rows 1 - <f, m> / (|f| |m| + eps)
    L1Cosine    L1 + Cosine
    Dice        mean_rows 1 - 2 <f, m> / (|f|^2 + |m|^2 + eps)
    NCC         1 - mean_c corr_c(f, m), each channel correlated over all rows
    DotProduct  -mean_rows <f, m> / C

where a row is the C-vector of one item at one position. Returns a 0-dim tensor.
"""

from __future__ import annotations

import torch

EPS = 1e-8
NAMES = ("L1", "L2", "Cosine", "L1Cosine", "Dice", "NCC", "DotProduct")


def rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N * prod(spatial), C)."""
    return x if x.dim() == 2 else x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1])


def _cosine(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (1.0 - (f * m).sum(1) / (f.norm(dim=1) * m.norm(dim=1) + EPS)).mean()


def distance(name: str, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The mean distance ``name`` between features (N, C, *spatial) of equal shape."""
    if fixed.shape != moving.shape:
        raise ValueError(
            f"distance {name}: fixed features {tuple(fixed.shape)} and moving {tuple(moving.shape)} differ"
        )
    if fixed.dim() < 2:
        raise ValueError(f"distance {name}: features must be (N, C, *spatial), got {tuple(fixed.shape)}")
    f, m = rows(fixed), rows(moving)
    if name == "L1":
        return (f - m).abs().mean()
    if name == "L2":
        return (f - m).square().mean()
    if name == "Cosine":
        return _cosine(f, m)
    if name == "L1Cosine":
        return (f - m).abs().mean() + _cosine(f, m)
    if name == "Dice":
        return (1.0 - 2.0 * (f * m).sum(1) / (f.square().sum(1) + m.square().sum(1) + EPS)).mean()
    if name == "NCC":
        fc, mc = f - f.mean(0, keepdim=True), m - m.mean(0, keepdim=True)
        return 1.0 - ((fc * mc).sum(0) / (fc.norm(dim=0) * mc.norm(dim=0) + EPS)).mean()
    if name == "DotProduct":
        return -(f * m).sum(1).mean() / f.shape[1]
    raise ValueError(f"distance {name!r} is not one of {', '.join(NAMES)}")
