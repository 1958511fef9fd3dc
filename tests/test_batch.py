"""Cohorts: impact-elastix batch / register_many on crops of the elastix lung CT pair.

A real 2-worker LocalCluster against one-by-one elastix runs, resume after SIGINT, broken pairs,
the manifest checks, the worker checks and the SLURM job script.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from impact_elastix.batch import ManifestError, read_manifest, register_many
from impact_elastix.batch.engines import WorkerError, check_workers, resource_asks
from impact_elastix.batch.job import Job
from impact_elastix.batch.manifest import Pair
from impact_elastix.cli import main
from impact_elastix.executables import run_elastix
from impact_elastix.maps import impact_metric
from impact_elastix.mha import read_mha, write_mha
from impact_elastix.parameter_object import write_parameter_file

from benchmarks.cohort import cohort_map, write_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 pairs: crops (40x40x32) of the baseline CT to the follow-up CT, affine start, landmarks."""
    return write_cohort(tmp_path_factory.mktemp("cohort"), 4, size=(40, 40, 32))


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open() as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def _transform_parameters(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("(TransformParameters "))


def test_local_cluster_matches_one_by_one(tmp_path: Path, cohort: Path) -> None:
    params = write_parameter_file(cohort_map(iterations=30, resolutions=1, samples=500), tmp_path / "params.txt")
    rows = register_many(cohort, [params], tmp_path / "out", scheduler="local:2", progress=False)
    assert [r["id"] for r in rows] == [p.id for p in read_manifest(cohort)]
    assert {r["status"] for r in rows} == {"done"}, rows
    assert len({r["worker"] for r in rows}) == 2  # both worker processes took pairs
    for pair, row in zip(read_manifest(cohort), rows, strict=True):
        alone = run_elastix(pair.fixed, pair.moving, [params], tmp_path / "alone" / pair.id,
                            initial_transform=pair.initial_transform, threads=1)  # fmt: skip
        assert _transform_parameters(Path(row["transform"])) == _transform_parameters(alone)
        assert row["tre_before_mm"] == pytest.approx(5.44, abs=0.05)  # the affine start of the lung pair
        assert row["tre_after_mm"] > 0 and row["metric"] is not None
        assert 0 < row["peak_rss_mb"] <= row["memory_estimate_mb"]  # the declared memory covers the run
    assert json.loads((tmp_path / "out" / "summary.json").read_text())[0]["id"] == rows[0]["id"]
    page = (tmp_path / "out" / "overview.html").read_text()
    assert "<svg" in page and "TRE (mm), 4 pairs" in page and rows[0]["id"] in page


def test_impact_pair_memory_estimate_covers_the_run(tmp_path: Path, cohort: Path, m730: Path) -> None:
    crop = read_manifest(cohort)[0].fixed  # to itself: Static feature maps of two small images
    metric = impact_metric(m730, mode="Static", patch_size="0*0*0")
    params = cohort_map(iterations=10, resolutions=1, samples=300) | metric
    (row,) = register_many([{"id": "impact", "fixed": crop, "moving": crop}], params, tmp_path / "out", progress=False)
    assert row["status"] == "done", row["error"]
    assert 0 < row["peak_rss_mb"] <= row["memory_estimate_mb"]


def _elastix_processes(out: Path) -> list[int]:
    """elastix processes whose command line writes under ``out``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and cmdline[0].endswith(b"elastix") and str(out).encode() in b" ".join(cmdline):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("where", [["--jobs", "2"], ["--scheduler", "local:2"]], ids=["local-pool", "local-cluster"])
def test_sigint_then_rerun_does_only_the_rest(tmp_path: Path, cohort: Path, where: list[str]) -> None:
    pairs = read_manifest(cohort)
    copy = tmp_path / "fixed0.mha"  # this test changes it later
    copy.write_bytes(pairs[0].fixed.read_bytes())
    manifest = tmp_path / "pairs.csv"
    rows = [f"{p.id},{copy if i == 0 else p.fixed},{p.moving},{p.initial_transform}" for i, p in enumerate(pairs)]
    manifest.write_text("id,fixed,moving,initial_transform\n" + "\n".join(rows) + "\n")
    params = write_parameter_file(cohort_map(iterations=400, resolutions=1, samples=3000), tmp_path / "params.txt")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "impact_elastix.cli", "batch", str(manifest), "-p", str(params), "-o", str(out)]
    # SIGINT as a terminal leaves it: a shell's background jobs (a CI runner's, `cmd &`) inherit it
    # ignored, and Python then installs no KeyboardInterrupt handler.
    batch = subprocess.Popen(
        [*cmd, *where],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not list(out.glob("*/done.json")) and time.monotonic() < deadline and batch.poll() is None:
        time.sleep(0.1)
    assert list(out.glob("*/done.json")), batch.communicate()[1]
    batch.send_signal(signal.SIGINT)
    _, stderr = batch.communicate(timeout=180)
    assert batch.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not _elastix_processes(out)  # the running elastix children were killed, not orphaned
    first = _summary(out)
    assert 1 <= len(first) < len(pairs) and {r["status"] for r in first.values()} == {"done"}
    markers = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    assert set(markers) == set(first)

    assert main(["batch", str(manifest), "-p", str(params), "-o", str(out), "-q"]) == 0
    second = _summary(out)
    assert set(second) == {p.id for p in pairs} and {r["status"] for r in second.values()} == {"done"}
    assert {i for i, r in second.items() if r["reused"] == "True"} == set(first)  # only the rest ran
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json") if p.parent.name in markers} == markers

    # A changed input is redone, the others are reused.
    array, g = read_mha(copy)
    write_mha(copy, array + 1, spacing=g.spacing, origin=g.origin, direction=g.direction)
    assert main(["batch", str(manifest), "-p", str(params), "-o", str(out), "-q"]) == 0
    third = _summary(out)
    assert [i for i, r in third.items() if r["reused"] == "False"] == [pairs[0].id]


def test_broken_pairs_are_reported_and_the_rest_finish(tmp_path: Path, cohort: Path) -> None:
    pairs = read_manifest(cohort)
    bad_transform = tmp_path / "bad_transform.txt"
    bad_transform.write_text('(Transform "TranslationTransform"\n(NumberOfParameters 3)\n')  # unbalanced
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "id,fixed,moving,initial_transform\n"
        f"good,{pairs[0].fixed},{pairs[0].moving},{pairs[0].initial_transform}\n"
        f"missing,{pairs[1].fixed},{tmp_path / 'nowhere.mha'},\n"
        f"badmap,{pairs[1].fixed},{pairs[1].moving},{bad_transform}\n"
    )
    params = write_parameter_file(cohort_map(iterations=20, resolutions=1, samples=300), tmp_path / "params.txt")
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "-p", str(params), "-o", str(out), "--retries", "1", "-q"]) == 1
    rows = _summary(out)
    assert rows["good"]["status"] == "done"
    assert rows["missing"]["status"] == "failed"
    assert f"moving: file not found: {tmp_path / 'nowhere.mha'}" in rows["missing"]["error"]
    assert rows["badmap"]["status"] == "failed" and rows["badmap"]["attempts"] == "2"
    assert "the following line in your parameter file is invalid" in rows["badmap"]["error"]  # elastix's text
    assert rows["badmap"]["error"].strip() == (out / "badmap" / "error.txt").read_text().strip()
    assert not (out / "badmap" / "done.json").exists()
    assert "<h2>Failed</h2>" in (out / "overview.html").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,fixed\na,f.mha\n", "missing column(s) moving"),
        (
            "id,fixed,moving\na,f.mha,m.mha\na,g.mha,m.mha\n",
            "line 3, column id: 'a' is already used (pairs.csv line 2)",
        ),
        ("id,fixed,moving\n../up,f.mha,m.mha\n", "line 2, column id: '../up' cannot name a folder"),
        ("id,fixed,moving\nsummary.csv,f.mha,m.mha\n", "cannot name a folder"),
        ("id,fixed,moving\na,,m.mha\n", "line 2, column fixed: empty"),
        ("id,fixed,moving,labels\na,f.mha,m.mha,l.mha\n", "unknown column(s) labels"),
        ("id,fixed,moving,fixed_landmarks\na,f.mha,m.mha,p.txt\n", "fixed_landmarks and moving_landmarks together"),
        ("id,fixed,moving\na,f.mha,m.mha,extra\n", "line 2: more fields than the 3 columns"),
    ],
)
def test_manifest_errors_name_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(ManifestError) as error:
        read_manifest(tmp_path / "pairs.csv")
    assert message in str(error.value)


def test_manifest_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pairs.csv").write_text("id,fixed,moving,fixed_mask\np1,img/f.mha,/abs/m.mha,\n")
    (pair,) = read_manifest(tmp_path / "sub" / "pairs.csv")
    assert pair == Pair("p1", tmp_path / "sub" / "img" / "f.mha", Path("/abs/m.mha"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threads_per_job": 0}, "threads_per_job must be >= 1, got 0"),
        ({"retries": -1}, "retries must be >= 0, got -1"),
        ({"jobs": 2, "scheduler": "local:2"}, "jobs=2 sizes the local pool"),
        ({"scheduler": "local:0"}, "local:N needs a worker count N >= 1"),
    ],
)
def test_register_many_rejects_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    pairs = [{"id": "a", "fixed": tmp_path / "f.mha", "moving": tmp_path / "m.mha"}]
    with pytest.raises(ValueError) as error:
        register_many(pairs, {"Metric": "AdvancedMeanSquares"}, tmp_path / "out", progress=False, **options)
    assert message in str(error.value)


class _FakeClient:
    """What check_workers reads of a Dask client: per worker, the result of the probe or its error."""

    def __init__(self, views: dict[str, object]) -> None:
        self.views = views

    def run(self, _function: object, _paths: list[str], on_error: str) -> dict[str, object]:
        assert on_error == "return"
        return self.views


def test_worker_check_names_worker_and_file(tmp_path: Path) -> None:
    job = Job(Pair("p", tmp_path / "f.mha", tmp_path / "m.mha"), (), tmp_path / "p", tmp_path, 1, 0, 1)
    seen = {"missing": [], "elastix": True}
    check_workers(_FakeClient({"tcp://a:1": seen, "tcp://b:1": seen}), [job])
    everywhere = {"missing": [str(tmp_path / "m.mha")], "elastix": True}
    check_workers(_FakeClient({"tcp://a:1": everywhere, "tcp://b:1": everywhere}), [job])  # left to the pair
    with pytest.raises(WorkerError) as error:
        check_workers(_FakeClient({"tcp://a:1": seen, "tcp://b:1": everywhere}), [job])
    assert f"tcp://b:1: cannot see {tmp_path / 'm.mha'}" in str(error.value)
    with pytest.raises(WorkerError, match="tcp://c:1: cannot run impact_elastix"):
        check_workers(_FakeClient({"tcp://a:1": seen, "tcp://c:1": ModuleNotFoundError("impact_elastix")}), [job])


class _FakeScheduler:
    """What the placement reads of a Dask client: the workers' declared resources."""

    def __init__(self, *resources: dict[str, int]) -> None:
        self.workers = {f"tcp://w{i}:1": {"resources": r, "nthreads": 1} for i, r in enumerate(resources)}

    def scheduler_info(self) -> dict[str, object]:
        return {"workers": self.workers}


def test_jobs_ask_for_their_memory_where_workers_declare_it(tmp_path: Path) -> None:
    def job(memory: int) -> Job:
        return Job(Pair(f"p{memory}", tmp_path / "f.mha", tmp_path / "m.mha"), (), tmp_path, tmp_path, 2, 0, memory)

    notes: list[str] = []
    jobs = [job(2**30), job(3 * 2**30)]
    asks = resource_asks(_FakeScheduler({"memory": 2 * 2**30}, {"memory": 2 * 2**30}), jobs, 2, notes.append)
    assert asks == [{"memory": 2**30}, {"memory": 2 * 2**30}]  # the big one runs alone on a worker
    assert notes == ["p3221225472: needs about 3.0 GiB, the largest worker holds 2.0 GiB; it runs alone on one"]
    hpc = _FakeScheduler({"memory": 4 * 2**30, "cores": 8})
    assert resource_asks(hpc, jobs[:1], 2, notes.append) == [{"memory": 2**30, "cores": 2}]
    assert resource_asks(_FakeScheduler({"memory": 2**30}, {}), jobs[:1], 2, notes.append) == [None]
    assert "workers declare no 'memory' resource" in notes[-1]


def test_slurm_job_script_maps_the_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pairs.csv").write_text("id,fixed,moving\na,f.mha,m.mha\n")
    argv = ["batch", str(tmp_path / "pairs.csv"), "-p", "params.txt", "-o", str(tmp_path / "out"), "--cluster",
            "slurm", "--queue", "short", "--cores", "4", "--memory", "16GB", "--walltime", "02:30:00",
            "--print-job-script"]  # fmt: skip
    assert main(argv) == 0
    script = capsys.readouterr().out
    assert "#SBATCH -p short" in script
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=15G" in script  # dask-jobqueue writes 16 GB as 15 GiB
    assert "#SBATCH -t 02:30:00" in script
    assert f"--resources memory={16 * 10**9},cores=4" in script  # what the pairs' memory asks are placed by
    assert sys.executable in script and not (tmp_path / "out").exists()
