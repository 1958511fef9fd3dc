"""The first-run demo: a progress line per level and the TRE table on the console, elastix's own
log in a file whose path it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_is_quiet_and_says_where_the_log_is(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "examples.lung_demo", "--iterations", "3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    console = done.stdout + done.stderr
    assert "level 1/2" in done.stderr and "level 2/2" in done.stderr  # the progress line
    assert f"elastix's full log: {out / 'elastix.log'}" in done.stdout
    assert (out / "elastix.log").read_text().count("Resolution:") >= 2
    assert "IMPACT Jacobian B-spline" in done.stdout and "affine start" in done.stdout
    assert "Error" not in console and len(console.splitlines()) < 30
