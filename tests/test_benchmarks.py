"""The benchmark harness runs end to end (the cheap contestants only) and reads elastix's logs right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import impact_statistics, iterations

ROOT = Path(__file__).resolve().parents[1]


def test_log_parsing() -> None:
    log = "\n".join(
        [
            "Resolution: 0",
            "1:ItNr\t2:Metric",
            "0\t-1.0",
            "1\t-1.1",
            "Stopping condition: done.",
            "IMPACT statistics: 10 evaluations (9 with gradient), 1000 samples, 2000 patches forward, "
            "900 patches backward, 1.5 s in the metric",
            "Resolution: 1",
            "1:ItNr\t2:Metric",
            "0\t-1.2",
            "Stopping condition: done.",
            "IMPACT statistics: 5 evaluations (5 with gradient), 500 samples, 1000 patches forward, "
            "500 patches backward, 0.5 s in the metric",
        ]
    )
    assert iterations(log) == 3
    stats = impact_statistics(log)
    assert stats["evaluations"] == 15 and stats["forward"] == 3000 and stats["backward"] == 1400
    assert abs(stats["metric_seconds"] - 2.0) < 1e-12
    assert impact_statistics("no impact here") == {}


def test_harness_runs_and_writes_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--cases",
            "brain2d",
            "--contestants",
            "Mattes",
            "--no-reference",
            "--iterations",
            "20",
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "| AdvancedMattesMutualInformation |" in out.stdout and "start: field error" in out.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    start = next(r for r in rows if r["contestant"] == "start")
    mattes = next(r for r in rows if r["contestant"] == "AdvancedMattesMutualInformation")
    assert mattes["iterations"] == 40 and mattes["peak_rss_gb"] > 0
    assert mattes["field_error_mm"] < 0.5 * start["field_error_mm"]  # the synthetic deformation is recovered


def test_a_case_without_its_data_is_skipped_unless_named(tmp_path: Path) -> None:
    """A clone without ../shared: `python -m benchmarks` runs the other cases and says what it skipped;
    asking for the BrainWeb case by name is an error naming the variable to set."""
    env = {**os.environ, "IMPACT_BRAINWEB": str(tmp_path / "nothing-here")}
    common = ["--no-reference", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")]
    every = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--contestants", "no such contestant", *common],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert every.returncode == 0, every.stderr
    assert "skipping case brainweb" in every.stderr and "IMPACT_BRAINWEB" in every.stderr
    cases = {r["case"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert len(cases) == 3  # lung, brain2d, multimodal3d: their start rows
    named = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--cases", "brainweb", *common],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert named.returncode == 2 and "IMPACT_BRAINWEB" in named.stderr
