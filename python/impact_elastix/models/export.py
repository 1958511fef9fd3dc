"""Turn a PyTorch module into an IMPACT-ready TorchScript file.

The IMPACT contract (what the elastix component and ``ImpactLoss`` call): ``forward(x)`` with
x (N, C, *spatial) float32 returns ``List[Tensor]``, one (N, C_l, *spatial_l) entry per output.
``export`` wraps a module so that it returns chosen intermediate layers, checks the result on an
input of another size than the one it was traced with (a trace that baked in a size fails there),
and stores what it knows (dimension, channels, layer names) inside the file as ``impact.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

METADATA = "impact.json"


def probe_input(channels: int, size: Sequence[int], *, batch: int = 1, seed: int | None = None) -> torch.Tensor:
    """A random (batch, channels, *size) float32 input that probes a model (``size`` in tensor order:
    z, y, x). ``seed``: a generator of its own, so the probe is reproducible; None: torch's global one."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return torch.randn([batch, channels, *size], generator=generator)


class _Layers(nn.Module):
    """Runs ``module`` and returns the outputs of its submodules ``names`` (forward hooks)."""

    def __init__(self, module: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.names = list(names)
        self._store: dict[str, torch.Tensor] = {}
        modules = dict(module.named_modules())
        self.handles = []
        for name in self.names:
            if name not in modules:
                known = ", ".join(n for n in modules if n) or "none"
                raise ValueError(f"layers: {name!r} is not a submodule of {type(module).__name__}; known: {known}")
            self.handles.append(modules[name].register_forward_hook(self._keep(name)))

    def remove_hooks(self) -> None:
        """Leaves the user's module as it was."""
        for handle in self.handles:
            handle.remove()

    def _keep(self, name: str):  # noqa: ANN202 - a hook closure
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layers: submodule {name!r} returns {type(output).__name__}, not a tensor")
            self._store[name] = output

        return hook

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._store.clear()
        self.module(x)
        return [self._store[name] for name in self.names]


class _TensorAsList(nn.Module):
    """Makes a module that returns one tensor return a one-element list (scriptable)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.module(x)]


class _SequenceAsList(nn.Module):
    """Makes a module that returns a tuple of tensors return a list (traced)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.module(x))


def _as_list(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise TypeError(f"the module returns {type(out).__name__}; IMPACT needs a tensor or a list of tensors")


def export(
    module: nn.Module,
    dimension: int,
    channels: int,
    path: str | Path,
    layers: Sequence[str] | None = None,
    example_size: int = 64,
    preprocessing: str = "",
    check_size: int | None = None,
) -> Path:
    """Writes ``module`` as TorchScript returning ``layers`` (submodule names; None: its own output).

    ``dimension`` (2 or 3) and ``channels`` describe the input (N, channels, *[size]*dimension).
    Modules with ``layers`` are traced on an ``example_size`` input (eager modules only: hooks do
    not run in TorchScript); without ``layers`` a module is scripted when it can be, else traced.
    The file is reloaded and compared with the eager module on a ``check_size`` input (default
    ``example_size`` + 8 voxels, whose stride-compatible size differs from the trace's).
    ``preprocessing`` ("ct", "mr", "imagenet" or "") is recorded for ``inspect``.
    """
    if dimension not in (2, 3):
        raise ValueError(f"dimension {dimension} is not 2 or 3")
    if channels < 1:
        raise ValueError(f"channels {channels} must be >= 1")
    if preprocessing not in ("", "ct", "mr", "imagenet"):
        raise ValueError(f"preprocessing {preprocessing!r} is not one of '', 'ct', 'mr', 'imagenet'")
    path = Path(path)
    module = module.eval()
    example = probe_input(channels, [example_size] * dimension, seed=0)
    if layers is not None:
        if isinstance(module, torch.jit.ScriptModule):
            raise TypeError("layers= needs an eager nn.Module: forward hooks do not run inside TorchScript")
        if not layers:
            raise ValueError("layers is empty; name at least one submodule, or pass None for the module's output")
        wrapper: nn.Module = _Layers(module, layers)
    else:
        with torch.no_grad():
            out = module(example)
        _as_list(out)
        wrapper = (
            module
            if isinstance(out, list)
            else _TensorAsList(module)
            if isinstance(out, torch.Tensor)
            else _SequenceAsList(module)
        )
    try:
        _save(wrapper, layers is None, example, dimension, channels, path, layers, preprocessing)
        _check(path, wrapper, dimension, channels, check_size or example_size + 8)
    finally:
        if isinstance(wrapper, _Layers):
            wrapper.remove_hooks()
    return path


def _save(
    wrapper: nn.Module,
    scriptable: bool,
    example: torch.Tensor,
    dimension: int,
    channels: int,
    path: Path,
    layers: Sequence[str] | None,
    preprocessing: str,
) -> None:
    scripted: torch.jit.ScriptModule | None = None
    if scriptable:
        try:
            scripted = wrapper if isinstance(wrapper, torch.jit.ScriptModule) else torch.jit.script(wrapper)
        except Exception:  # noqa: BLE001 - not scriptable: tracing is the documented fallback
            scripted = None
    with torch.no_grad():
        if scripted is None:
            scripted = torch.jit.trace(wrapper, example, check_trace=False, strict=False)
        outputs = _as_list(wrapper(example))
    metadata = {
        "format": "impact-torchscript/1",
        "dimension": dimension,
        "channels": channels,
        "outputs": len(outputs),
        "output_channels": [int(t.shape[1]) for t in outputs],
        "layers": list(layers) if layers is not None else None,
        "preprocessing": preprocessing,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path), _extra_files={METADATA: json.dumps(metadata)})


def _check(path: Path, eager: nn.Module, dimension: int, channels: int, size: int) -> None:
    """The saved file must give the eager module's outputs on an input it was not traced with."""
    probe = probe_input(channels, [size] * dimension, seed=1)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        expected = _as_list(eager(probe))
        got = _as_list(loaded(probe))
    if len(got) != len(expected):
        raise RuntimeError(f"export check: {path} returns {len(got)} outputs, the module {len(expected)}")
    for k, (a, b) in enumerate(zip(got, expected, strict=True)):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise RuntimeError(
                f"export check: output {k} of {path} differs from the module on a {size}^{dimension} input "
                f"(shapes {tuple(a.shape)} vs {tuple(b.shape)}); the trace probably fixed a size: "
                "make the module scriptable, or pass example_size equal to the size you will use"
            )


def export_mind(path: str, variant: str = "R1D2", dimension: int = 3, ssc: bool = False) -> str:
    """Writes a MIND (or MIND-SSC) TorchScript model; returns the path.

    MIND is invariant to affine intensity changes, so it is recorded as needing no preprocessing."""
    from .mind import MIND, parse_variant

    radius, dilation = parse_variant(variant)
    return str(export(MIND(dimension, radius, dilation, ssc), dimension, 1, path, example_size=16))
