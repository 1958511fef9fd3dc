"""Running one contestant and measuring it: wall time, peak RSS, the metric's own statistics, FLOPs."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from impact_elastix.models.builtin import builtin_name
from impact_elastix.models.export import probe_input


@dataclass
class Run:
    seconds: float
    peak_rss_gb: float
    log: str


def run_measured(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Run:
    """Runs a command, returning its wall time and its own peak RSS (wait4: this child only)."""
    start = time.perf_counter()
    with open(log_path.parent / "console.txt", "w") as console:
        proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if os.waitstatus_to_exitcode(status) != 0:
        tail = "\n".join((log or (log_path.parent / "console.txt").read_text(errors="replace")).splitlines()[-15:])
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {os.waitstatus_to_exitcode(status)}):\n{tail}")
    return Run(seconds, usage.ru_maxrss / 1024**2, log)


_STATS = re.compile(
    r"IMPACT statistics: (\d+) evaluations \((\d+) with gradient\), (\d+) samples, (\d+) patches forward, "
    r"(\d+) patches backward, ([\d.e+-]+) s in the metric"
)


def impact_statistics(log: str) -> dict[str, float]:
    """Our metric's per-level work, summed over levels (absent for other metrics and the reference)."""
    totals = {
        "evaluations": 0.0,
        "with_gradient": 0.0,
        "samples": 0.0,
        "forward": 0.0,
        "backward": 0.0,
        "metric_seconds": 0.0,
    }
    found = False
    for m in _STATS.finditer(log):
        found = True
        for key, value in zip(totals, m.groups(), strict=True):
            totals[key] += float(value)
    return totals if found else {}


def iterations(log: str) -> int:
    """Optimizer iterations over all levels, from elastix's iteration tables."""
    count, in_table = 0, False
    for line in log.splitlines():
        if line.startswith("1:ItNr"):
            in_table = True
        elif in_table and line[:1].isdigit():
            count += 1
        elif line.startswith("Resolution:") or line.startswith("Stopping condition"):
            in_table = False
    return count


def gemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate in GFLOP/s: the physical floor for model work."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def model_flops(model: Path, patch: tuple[int, ...], channels: int = 1) -> tuple[float, float]:
    """FLOPs of one patch through the model: (forward, backward to the input), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    name = builtin_name(model)
    if name is not None:  # the built-in MIND: its TorchScript twin has the same operations
        from impact_elastix.models.mind import MIND, parse_variant

        radius, dilation = parse_variant(name.split("/")[1])
        net = MIND(len(patch), radius, dilation, name.startswith("MIND-SSC"))
    else:
        net = torch.jit.load(str(model), map_location="cpu").eval()
    for p in net.parameters():
        p.requires_grad_(False)
    batch = 64
    x = probe_input(channels, tuple(reversed(patch)), batch=batch).requires_grad_(True)
    with FlopCounterMode(display=False) as forward:
        out = net(x)
    outs = list(out) if isinstance(out, list | tuple) else [out]
    with FlopCounterMode(display=False) as backward:
        sum(o.sum() for o in outs).backward()
    return forward.get_total_flops() / batch, backward.get_total_flops() / batch
