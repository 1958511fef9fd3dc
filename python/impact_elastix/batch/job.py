"""One pair of the cohort, as a worker runs it: skip if done, else elastix (retried), measure, mark done.

The done-marker ``out/<id>/done.json`` holds the pair's summary row and a digest of what produced it:
SHA-256 of the contents of every input file, the parameter maps' text and the package version. File
contents rather than size + mtime + path because cohorts move (copied to scratch, mounted elsewhere:
paths and mtimes change, results stay valid) and because an image rewritten in place with the same
size must count as changed. Hashing reads each input once per batch run, on the worker, in parallel
with the other pairs. The thread count is not part of the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..digest import sha256_file
from ..executables import ElastixError, run_elastix, run_transformix
from ..mha import read_geometry
from ..points import read_points, read_transformix_points, tre, write_points
from .manifest import Pair

MARKER = "done.json"
ERROR = "error.txt"
_FINAL_METRIC = re.compile(r"^Final metric value\s*=\s*(\S+)", re.MULTILINE)
_POLL_S = 0.1  # memory sampling interval; the stop signal is checked every 5th sample


class StopSignal(Protocol):
    """``threading.Event`` on the local pool, ``distributed.Event`` on Dask workers."""

    def is_set(self) -> bool: ...


class Interrupted(Exception):
    """The batch was stopped (Ctrl-C) while this pair ran; its elastix was killed."""


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one pair (picklable: sent to Dask workers)."""

    pair: Pair
    maps: tuple[str, ...]  # parameter map texts, applied in sequence
    out: Path  # out/<id>
    cwd: Path  # where relative model paths in the maps resolve: the batch's working directory
    threads: int | None
    retries: int
    memory: int  # bytes declared to the scheduler (reported beside the measured peak)


def input_digest(job: Job) -> str:
    """The digest stored in the done-marker (see the module docstring)."""
    h = hashlib.sha256(f"impact-elastix {__version__}\n".encode())
    for text in job.maps:
        h.update(b"map\n" + text.encode())
    for column, path in sorted(job.pair.files().items()):
        h.update(f"{column} {sha256_file(path)}\n".encode())
    return h.hexdigest()


def _peak_rss(pid: int) -> int:
    """The process's high-water RSS (VmHWM, bytes) while it runs; 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _watched_elastix(job: Job, parameter_files: list[Path], stop: StopSignal) -> tuple[Path, int]:
    """Runs elastix in a thread while this one samples its peak RSS and kills it when ``stop`` is set.

    Peak RSS is the child's VmHWM read from /proc every 0.1 s (no psutil; getrusage(RUSAGE_CHILDREN)
    would mix the pairs that share a worker process); only growth in its last 0.1 s can be missed.
    """
    procs: list[subprocess.Popen[str]] = []
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["transform"] = run_elastix(
                job.pair.fixed,
                job.pair.moving,
                parameter_files,
                job.out,
                initial_transform=job.pair.initial_transform,
                fixed_mask=job.pair.fixed_mask,
                moving_mask=job.pair.moving_mask,
                threads=job.threads,
                cwd=job.cwd,
                on_start=procs.append,
            )
        except Exception as e:  # handed to the calling thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name=f"elastix {job.pair.id}", daemon=True)
    thread.start()
    peak, polls, stopped = 0, 0, False
    while thread.is_alive():
        thread.join(_POLL_S)
        if procs:
            peak = max(peak, _peak_rss(procs[0].pid))
        polls += 1
        if not stopped and polls % 5 == 0 and stop.is_set():
            stopped = True
            for proc in procs:
                proc.kill()
    # Ctrl-C in a terminal reaches elastix too (same process group): an interruption, not a failure.
    if stopped or (procs and procs[0].returncode in (-signal.SIGINT, -signal.SIGTERM)):
        raise Interrupted(job.pair.id)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["transform"], peak


def _final_metric(log: Path) -> float | None:
    """The last map's ``Final metric value`` from elastix.log (None if elastix did not write one)."""
    values = _FINAL_METRIC.findall(log.read_text(errors="replace")) if log.is_file() else []
    try:
        return float(values[-1]) if values else None
    except ValueError:
        return None


def _world_points(points_file: Path, image: Path) -> Any:
    points, is_index = read_points(points_file)
    if not is_index:
        return points
    if image.suffix.lower() not in (".mha", ".mhd"):
        raise ValueError(f"{points_file}: voxel-index landmarks need an .mha/.mhd image; give 'point' (world) files")
    return read_geometry(image).index_to_world(points)


def landmark_tre(pair: Pair, transform: Path, out: Path) -> tuple[float, float]:
    """Mean TRE (mm) of the fixed landmarks mapped to moving space: before (identity, or the initial
    transform when the pair has one) and after the registration."""
    assert pair.fixed_landmarks is not None and pair.moving_landmarks is not None
    fixed = _world_points(pair.fixed_landmarks, pair.fixed)
    target = _world_points(pair.moving_landmarks, pair.moving)
    if fixed.shape != target.shape:
        raise ValueError(f"{pair.id}: {len(fixed)} fixed but {len(target)} moving landmarks")
    (out / "landmarks").mkdir(exist_ok=True)
    points = write_points(out / "landmarks" / "fixed_points.txt", fixed)

    def mapped(tp: Path, name: str) -> Any:
        run_transformix(tp, out / "landmarks" / name, points=points)
        return read_transformix_points(out / "landmarks" / name / "outputpoints.txt")

    before = mapped(pair.initial_transform, "initial") if pair.initial_transform else fixed
    return float(tre(before, target).mean()), float(tre(mapped(transform, "final"), target).mean())


def _write_atomically(path: Path, text: str) -> None:
    """A reader (or a rerun after Ctrl-C) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _row(job: Job, worker: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": job.pair.id,
        "status": "failed",
        "reused": False,
        "attempts": 0,
        "wall_s": None,
        "peak_rss_mb": None,
        "memory_estimate_mb": round(job.memory / (1 << 20)),
        "metric": None,
        "tre_before_mm": None,
        "tre_after_mm": None,
        "worker": worker,
        "transform": None,
        "error": "",
    }
    row.update(values)
    return row


def run_job(job: Job, stop: StopSignal, worker: str = "local") -> dict[str, Any]:
    """Registers one pair (or reuses its finished result); returns its summary row. Never raises for a
    failing pair: the row says ``failed`` with the error text. Raises ``Interrupted`` when stopped."""
    try:
        return _run_job(job, stop, worker)
    except Interrupted:
        raise
    except Exception as e:  # whatever breaks one pair must not stop the others
        return _row(job, worker, error=f"on {worker}: {type(e).__name__}: {e}")


def _run_job(job: Job, stop: StopSignal, worker: str) -> dict[str, Any]:
    if stop.is_set():
        raise Interrupted(job.pair.id)
    missing = [f"{column}: file not found: {path}" for column, path in job.pair.files().items() if not path.is_file()]
    if missing:
        return _row(job, worker, error=f"on {worker}: " + "; ".join(missing))
    digest = input_digest(job)
    marker = job.out / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text())
        if done.get("digest") == digest:
            return done["row"] | {"reused": True}
        marker.unlink()  # inputs or maps changed: redo, and until then the folder is not "done"
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / ERROR).unlink(missing_ok=True)
    parameter_files = []
    for i, text in enumerate(job.maps):
        parameter_files.append(job.out / f"parameters.{i}.txt")
        parameter_files[-1].write_text(text)
    error = ""
    for attempt in range(1, job.retries + 2):
        if stop.is_set():
            raise Interrupted(job.pair.id)
        start = time.perf_counter()
        try:
            transform, peak = _watched_elastix(job, parameter_files, stop)
        except (ElastixError, OSError) as e:
            error = str(e)
            continue
        wall = time.perf_counter() - start
        row = _row(
            job,
            worker,
            status="done",
            attempts=attempt,
            wall_s=round(wall, 2),
            peak_rss_mb=round(peak / (1 << 20)) if peak else None,
            metric=_final_metric(job.out / "elastix.log"),
            transform=str(transform),
        )
        if job.pair.fixed_landmarks is not None:
            try:
                before, after = landmark_tre(job.pair, transform, job.out)
                row |= {"tre_before_mm": round(before, 3), "tre_after_mm": round(after, 3)}
            except (ElastixError, ValueError, OSError) as e:
                return row | {"status": "failed", "error": f"landmarks: {e}"}
        _write_atomically(marker, json.dumps({"digest": digest, "row": row}, indent=1))
        return row
    _write_atomically(job.out / ERROR, error + "\n")
    return _row(job, worker, attempts=job.retries + 1, error=error)
