"""The IMPACT loss between two image batches (eq. 6 of the paper), for training registration networks.

    S(I_F, I_M) = sum_models sum_{l in layers} w_l D_l(F_l(I_F), F_l(I_M))

F_l is output l of a frozen feature extractor, D_l one of ``distances.NAMES``. The value equals the
elastix component's for the same inputs: fed the patches the metric samples, ``impact_loss`` gives
the metric's S (tested). Gradients flow to ``moving`` (and to ``fixed`` when it requires them).

Shapes: fixed, moving (B, C, *spatial) with 2 or 3 spatial axes. Each model sees them
* resized to ``shape`` (when given; linear interpolation),
* with channels replicated when C == 1 and the model wants more,
* slice by slice along ``slice_axis`` when the model is 2D and the images 3D.
"""

from __future__ import annotations

import inspect as pyinspect
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.archive import input_signature
from .distances import NAMES, distance


def _argument_count(model: nn.Module) -> int:
    """How many inputs ``forward`` takes: 1 (x), 2 (x, nLayers) or 4 (x, nLayers, stats, direction)."""
    if isinstance(model, torch.jit.ScriptModule):
        return len(model.forward.schema.arguments) - 1
    return len(pyinspect.signature(model.forward).parameters)


class FeatureExtractor(nn.Module):
    """A frozen IMPACT model with its input contract: (B, C, *spatial) -> list of (B', C_l, *spatial_l)."""

    def __init__(
        self,
        model: nn.Module,
        dimension: int | None,
        channels: int,
        shape: Sequence[int] | None = None,
        slice_axis: int = 0,
    ) -> None:
        super().__init__()
        if dimension not in (None, 2, 3):
            raise ValueError(f"dimension {dimension} is not 2 or 3 (or None: the input's)")
        self.model = model.eval()
        for parameter in self.model.parameters():  # frozen: a ScriptModule has no requires_grad_()
            parameter.requires_grad_(False)
        self.dimension = dimension
        self.channels = channels
        self.shape = None if shape is None else [int(s) for s in shape]
        self.slice_axis = slice_axis
        self.arguments = _argument_count(model)
        if self.arguments not in (1, 2, 4):
            raise ValueError(f"the model's forward takes {self.arguments} inputs; IMPACT models take 1, 2 or 4")

    def prepare(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The model input for a batch: resized, channel-replicated, sliced."""
        spatial = x.dim() - 2
        dimension = self.dimension or spatial
        if spatial not in (2, 3) or spatial < dimension:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; a {dimension}D model needs (B, C, *spatial) with "
                f"{dimension} or 3 spatial axes"
            )
        if self.shape is not None:
            if len(self.shape) != spatial:
                raise ValueError(f"shape {self.shape} has {len(self.shape)} axes; {name} has {spatial}")
            if list(x.shape[2:]) != self.shape:
                x = F.interpolate(x, size=self.shape, mode="trilinear" if spatial == 3 else "bilinear")
        c = x.shape[1]
        if c != self.channels:
            if c != 1:
                raise ValueError(f"{name} has {c} channels; the model takes {self.channels} (or give 1 to replicate)")
            x = x.expand(-1, self.channels, *x.shape[2:])
        if spatial == 3 and dimension == 2:
            if not 0 <= self.slice_axis < 3:
                raise ValueError(f"slice_axis {self.slice_axis} must be 0, 1 or 2 (a spatial axis of (D, H, W))")
            x = x.movedim(2 + self.slice_axis, 1)  # (B, S, C, h, w)
            x = x.reshape(-1, *x.shape[2:])
        return x

    def forward(self, x: torch.Tensor, outputs: int) -> list[torch.Tensor]:
        if self.arguments == 1:
            out = self.model(x)
        else:
            layers = torch.tensor(outputs, dtype=torch.int16)
            if self.arguments == 2:
                out = self.model(x, layers)
            else:
                values = x.detach().float()
                stats = torch.stack([values.min(), values.max(), values.mean(), values.std()]).cpu()
                direction = torch.eye(x.dim() - 2, dtype=torch.int16)
                out = self.model(x, layers, stats, direction)
        out = [out] if isinstance(out, torch.Tensor) else list(out)
        if len(out) < outputs:
            raise ValueError(f"the model returned {len(out)} output(s); layer index {outputs - 1} was asked for")
        return out


def impact_loss(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    extractors: Sequence[FeatureExtractor],
    layers: Sequence[Sequence[int]],
    weights: Sequence[float],
    distances: Sequence[str],
    subset_features: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """S of eq. 6. ``layers[k]``: output indices of extractor k; ``weights``/``distances``: one per
    selected layer, in order over the extractors. ``subset_features`` > 0 compares a random subset of
    that many channels per layer (the same for both images), drawn from ``generator``.
    Raises ValueError naming the model and layer when features are not finite."""
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must have the same shape")
    total = sum(len(chosen) for chosen in layers)
    if len(weights) != total or len(distances) != total:
        raise ValueError(
            f"{total} layer(s) selected: give as many weights ({len(weights)}) and distances ({len(distances)})"
        )
    value = fixed.new_zeros(())
    k = 0
    for number, (extractor, chosen) in enumerate(zip(extractors, layers, strict=True)):
        n = max(chosen) + 1
        with torch.set_grad_enabled(torch.is_grad_enabled() and fixed.requires_grad):
            f_out = extractor(extractor.prepare(fixed, "fixed"), n)
        m_out = extractor(extractor.prepare(moving, "moving"), n)
        for index in chosen:
            f, m = f_out[index], m_out[index]
            if 0 < subset_features < f.shape[1]:
                pick = torch.randperm(f.shape[1], generator=generator)[:subset_features].to(f.device)
                f, m = f.index_select(1, pick), m.index_select(1, pick)
            term = distance(distances[k], f, m)
            if not bool(torch.isfinite(term)):
                side = "fixed" if not bool(torch.isfinite(f).all()) else "moving"
                raise ValueError(
                    f"layer {index} of model {number} gives a non-finite "
                    f"{distances[k]} distance ({side} features contain NaN/inf); check the {side} images and the "
                    "model's preprocessing"
                )
            value = value + weights[k] * term
            k += 1
    return value


def _load(model: str | Path | nn.Module) -> tuple[nn.Module, dict | None]:
    """A model object and its impact.json (None for nn.Module objects and files without one)."""
    if isinstance(model, nn.Module):
        return model, None
    from ..models.archive import read_metadata, torchscript_members
    from ..models.store import fetch

    path = fetch(str(model))
    torchscript_members(path)
    return torch.jit.load(str(path), map_location="cpu"), read_metadata(path)


class ImpactLoss(nn.Module):
    """IMPACT loss module: ``ImpactLoss(models)(fixed, moving)`` -> 0-dim tensor (see ``impact_loss``).

    ``models``: model files, store names (``"TS/M730_2_Layers"``, downloaded once into
    ``~/.IMPACT/models``) or ``nn.Module`` objects. ``layers``: per model the output indices
    (default: output 0). ``weights`` (default 1) and ``distances`` (default "L1", as in the IMPACT reference):
    one per selected layer in order, or a single value for all. ``dimension``/``channels``: per model,
    default from the file's ``impact.json``, else the first convolution, else the input. ``shape``: resize
    inputs to this spatial size (None: as given). ``slice_axis``: axis of (D, H, W) along which a 2D
    model sees a 3D batch. ``subset_features``: random channel subset per layer and call (0: all).
    """

    def __init__(
        self,
        models: str | Path | nn.Module | Sequence[str | Path | nn.Module],
        layers: Sequence[Sequence[int]] | None = None,
        weights: float | Sequence[float] = 1.0,
        distances: str | Sequence[str] = "L1",
        dimension: int | Sequence[int | None] | None = None,
        channels: int | Sequence[int | None] | None = None,
        shape: Sequence[int] | None = None,
        slice_axis: int = 0,
        subset_features: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        items = list(models) if isinstance(models, list | tuple) else [models]
        if not items:
            raise ValueError("models is empty; give at least one model")
        self.layers = [list(v) for v in layers] if layers is not None else [[0]] * len(items)
        if len(self.layers) != len(items):
            raise ValueError(f"layers has {len(self.layers)} entries for {len(items)} model(s)")
        if any(not chosen or min(chosen) < 0 for chosen in self.layers):
            raise ValueError(f"layers {self.layers}: each model needs one or more output indices >= 0")
        total = sum(len(chosen) for chosen in self.layers)
        self.weights = [float(weights)] * total if isinstance(weights, int | float) else [float(w) for w in weights]
        self.distances = [distances] * total if isinstance(distances, str) else list(distances)
        for name in self.distances:
            if name not in NAMES:
                raise ValueError(f"distance {name!r} is not one of {', '.join(NAMES)}")
        dims = dimension if isinstance(dimension, list | tuple) else [dimension] * len(items)
        chans = channels if isinstance(channels, list | tuple) else [channels] * len(items)
        extractors = []
        for item, dim, chan in zip(items, dims, chans, strict=True):
            model, metadata = _load(item)
            signature = input_signature(model)
            dim = dim or (metadata or {}).get("dimension") or (signature[0] if signature else None)
            chan = chan or (metadata or {}).get("channels") or (signature[1] if signature else None) or 1
            extractors.append(FeatureExtractor(model, dim, int(chan), shape, slice_axis))
        self.extractors = nn.ModuleList(extractors)
        self.subset_features = subset_features
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        if len(self.weights) != total or len(self.distances) != total:
            raise ValueError(
                f"{total} layer(s) selected: weights ({len(self.weights)}) and distances ({len(self.distances)}) "
                "need one value each, or a single value"
            )

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        return impact_loss(
            fixed,
            moving,
            list(self.extractors),
            self.layers,
            self.weights,
            self.distances,
            self.subset_features,
            self.generator,
        )
