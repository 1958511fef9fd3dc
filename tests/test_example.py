"""The VoxelMorph-style example runs from the command line and its IMPACT network learns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_voxelmorph_example_trains_with_impact_and_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "voxelmorph_impact.py"), "--iterations", "120", "--batch", "4",
         "--test-pairs", "8", "--losses", "impact", "mse"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:5]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "TRE" not in line
    }
    before, impact = rows["identity (before)"], rows["impact (120 it)"]
    assert impact[0] < before[0] - 0.2, rows  # TRE (mm) down
    assert impact[1] > before[1], rows  # Dice up
    assert "mse (120 it)" in rows
    assert "iteration 120/120" in done.stderr  # progress output
