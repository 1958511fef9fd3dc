"""The VoxelMorph-style example runs from the command line (``python -m examples.voxelmorph_impact``)
and its IMPACT network learns.

Its claim must hold on any x86-64 CPU. With one seed, torch's kernels (thread count; AVX-512, AVX2
or scalar) change the training's path, so the claim is checked against the spread measured over
13 runs: seeds 0-5, 1 and 2 torch threads, ATen's AVX-512, AVX2 and scalar kernels
(``ATEN_CPU_CAPABILITY``), 120 steps as here:

| IMPACT network minus ... | min | mean | sd | margin asserted |
|---|---|---|---|---|
| Dice, start | 0.027 | 0.035 | 0.006 | > 0.01 (4.2 sd) |
| Dice, MSE network | 0.033 | 0.083 | 0.023 | > 0 (3.7 sd) |
| TRE, start (mm, lower) | 0.11 | 0.29 | 0.15 | not asserted (2.0 sd) |
| TRE, MSE network (mm, lower) | 0.44 | 0.83 | 0.30 | not asserted (2.7 sd) |

The TRE gains are real on every run measured but too variable at 120 steps for a bound of 3.5 sd
or more (the old 0.2 mm drop failed at 2 threads: 0.11 mm); 240 steps barely narrow them (seed 0:
0.21 -> 0.28 mm) at twice the time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_voxelmorph_example_trains_with_impact_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.voxelmorph_impact", "--iterations", "120", "--batch", "4",
         "--test-pairs", "8", "--losses", "impact", "mse"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:5]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "TRE" not in line
    }
    (_, before_dice, _), (_, impact_dice, _), (_, mse_dice, _) = (
        rows["identity (before)"],
        rows["impact (120 it)"],
        rows["mse (120 it)"],
    )
    assert impact_dice > before_dice + 0.01, rows  # the network learns (see the table above)
    assert impact_dice > mse_dice, rows  # and beats MSE on the multimodal pair
    assert "iteration 120/120" in done.stderr  # progress output
