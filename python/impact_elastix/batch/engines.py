"""Where the pairs run: a local pool of threads (each driving one elastix process), or Dask workers.

Both engines call ``on_start(job)`` / ``on_row(row)`` as pairs start and finish, place jobs by the
memory they declare, and on Ctrl-C set a stop signal that every running job polls: the job kills its
own elastix child (no orphans, on any worker), the engine waits for that, then re-raises.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .job import Interrupted, Job, StopSignal, run_job

Row = dict[str, Any]
CLUSTER_KINDS = ("slurm", "pbs", "sge")


class WorkerError(RuntimeError):
    """Dask workers that cannot run the batch (package missing, files not visible); names them."""


def available_memory() -> int:
    """Bytes this machine can give the batch now (MemAvailable; the total where /proc is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --- the local pool ------------------------------------------------------------------------------


def run_local(
    jobs: Sequence[Job], slots: int, memory: int, on_start: Callable[[Job], None], on_row: Callable[[Row], None]
) -> None:
    """Up to ``slots`` pairs at once, and only as many as fit in ``memory`` bytes together (a pair that
    needs more than all of it runs alone)."""
    stop = threading.Event()
    room = threading.Condition()
    in_use = 0

    def task(job: Job) -> Row | None:
        nonlocal in_use
        with room:
            while in_use and in_use + job.memory > memory and not stop.is_set():
                room.wait()
            if stop.is_set():
                return None
            in_use += job.memory
        try:
            on_start(job)
            return run_job(job, stop)
        except Interrupted:
            return None
        finally:
            with room:
                in_use -= job.memory
                room.notify_all()

    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="impact-batch")
    futures: list[Future[Row | None]] = [pool.submit(task, job) for job in jobs]
    pending, reported = set(futures), set()

    def report(future: Future[Row | None]) -> None:
        if (row := future.result()) is not None:
            on_row(row)
        reported.add(future)  # after on_row: a Ctrl-C in between reports it again below, not never

    try:
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                report(future)
    except KeyboardInterrupt:
        stop.set()
        with room:
            room.notify_all()
        pool.shutdown(wait=True, cancel_futures=True)  # running jobs kill their elastix and return
        for future in futures:
            if future not in reported and not future.cancelled():
                report(future)  # finished in the meantime: its marker is written, report it
        raise
    pool.shutdown()


# --- Dask ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterOptions:
    """An HPC cluster through dask-jobqueue: each batch job there is one Dask worker."""

    kind: str  # slurm, pbs or sge
    queue: str | None = None
    cores: int = 1  # per HPC job
    memory: str = "4GB"  # per HPC job, as the scheduler writes it
    walltime: str = "01:00:00"
    jobs: int = 1  # HPC jobs requested

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise ValueError(f"cluster kind {self.kind!r} is not one of {', '.join(CLUSTER_KINDS)}")
        if self.cores < 1 or self.jobs < 1:
            raise ValueError(f"cluster cores and jobs must be >= 1, got cores={self.cores}, jobs={self.jobs}")


def jobqueue_cluster(options: ClusterOptions) -> Any:
    """The dask-jobqueue cluster (not yet scaled: nothing is submitted until ``scale``)."""
    import dask_jobqueue
    from dask.utils import parse_bytes

    cls = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "sge": dask_jobqueue.SGECluster,
    }[options.kind]
    memory = parse_bytes(options.memory)
    return cls(
        queue=options.queue,
        cores=options.cores,
        processes=1,  # one worker per HPC job; the "cores" resource below bounds its concurrent pairs
        memory=options.memory,
        walltime=options.walltime,
        python=sys.executable,  # the same environment, on the shared file system
        worker_extra_args=["--resources", f"memory={memory},cores={options.cores}"],
        scheduler_options={"dashboard_address": None},
    )


@contextmanager
def dask_client(scheduler: str | None, cluster: ClusterOptions | None) -> Iterator[Any]:
    """A client on ``scheduler`` (an address, or ``local:N`` for a LocalCluster of N worker processes
    started for the batch) or on a dask-jobqueue ``cluster``; closes what it started."""
    from distributed import Client, LocalCluster

    if cluster is not None:
        with jobqueue_cluster(cluster) as hpc, Client(hpc) as client:
            hpc.scale(jobs=cluster.jobs)
            client.wait_for_workers(1)  # HPC queues can take long; the batch starts with the first worker
            yield client
    elif scheduler is not None and scheduler.startswith("local:"):
        try:
            n = int(scheduler.split(":", 1)[1])
            if n < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"--scheduler {scheduler!r}: local:N needs a worker count N >= 1") from None
        with (
            LocalCluster(
                n_workers=n,
                processes=True,
                threads_per_worker=1,
                resources={"memory": available_memory() // n},
                dashboard_address=None,
            ) as local,
            Client(local) as client,
        ):
            yield client
    elif scheduler is not None:
        with Client(scheduler) as client:
            yield client
    else:
        raise ValueError("dask_client needs a scheduler address, local:N, or cluster options")


def _worker_view(paths: list[str]) -> dict[str, Any]:
    """Runs on each worker: which inputs it cannot see, and whether it has our elastix."""
    from impact_elastix import elastix_executable

    return {"missing": [p for p in paths if not os.path.isfile(p)], "elastix": elastix_executable().is_file()}


def check_workers(client: Any, jobs: Sequence[Job]) -> None:
    """Every worker imports the package, has elastix, and sees the inputs that any worker sees.

    A file no worker sees is left to its pair (which then fails with "file not found", naming the
    worker); one that only some workers see is a file-system set-up problem and stops the batch here.
    """
    paths = sorted({str(p) for job in jobs for p in job.pair.files().values()})
    views = client.run(_worker_view, paths, on_error="return")
    problems = []
    for worker, view in sorted(views.items()):
        if isinstance(view, BaseException):
            problems.append(f"{worker}: cannot run impact_elastix ({type(view).__name__}: {view}); install it there")
        elif not view["elastix"]:
            problems.append(f"{worker}: impact_elastix is installed without its elastix executable")
    good = {w: set(v["missing"]) for w, v in views.items() if not isinstance(v, BaseException)}
    unseen_everywhere = set.intersection(*good.values()) if good else set()
    for worker, missing in sorted(good.items()):
        for path in sorted(missing - unseen_everywhere):
            problems.append(f"{worker}: cannot see {path} (other workers can: is the file system shared?)")
    if problems:
        raise WorkerError("workers not ready for the batch:\n  " + "\n  ".join(problems))


def resource_asks(client: Any, jobs: Sequence[Job], threads: int, note: Callable[[str], None]) -> list[dict | None]:
    """Per job the Dask resources to ask for: its memory (and cores) where every worker declares them."""
    workers = client.scheduler_info()["workers"].values()
    declared = [w.get("resources", {}) for w in workers]
    if not declared or any("memory" not in r for r in declared):
        note(
            "workers declare no 'memory' resource: jobs are placed without regard to memory "
            "(start workers with --resources memory=BYTES)"
        )
        return [None] * len(jobs)
    largest = max(r["memory"] for r in declared)
    asks: list[dict | None] = []
    for job in jobs:
        if job.memory > largest:
            note(
                f"{job.pair.id}: needs about {job.memory / 2**30:.1f} GiB, the largest worker holds "
                f"{largest / 2**30:.1f} GiB; it runs alone on one"
            )
        ask = {"memory": min(job.memory, largest)}
        if all("cores" in r for r in declared):
            ask["cores"] = threads
        asks.append(ask)
    return asks


def _dask_task(job: Job, stop_name: str) -> Row | None:
    """What a Dask worker runs: the job, stopped by the batch's distributed Event."""
    from distributed import Event, get_worker

    try:
        return run_job(job, Event(stop_name), get_worker().address)
    except Interrupted:
        return None


def slots(client: Any) -> int:
    return sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()) or 1


def run_dask(
    client: Any, jobs: Sequence[Job], threads: int, on_row: Callable[[Row], None], note: Callable[[str], None]
) -> None:
    """Submits every pair to the Dask cluster; reports rows as they complete."""
    from distributed import Event, as_completed
    from distributed import wait as dask_wait

    check_workers(client, jobs)
    token = uuid.uuid4().hex[:8]
    stop: StopSignal = Event(f"impact-elastix-stop-{token}", client=client)
    futures = [
        client.submit(
            _dask_task, job, stop.name, key=f"impact-elastix-{job.pair.id}-{token}", resources=ask, pure=False
        )  # fmt: skip
        for job, ask in zip(jobs, resource_asks(client, jobs, threads, note), strict=True)
    ]
    by_key = {future.key: job for future, job in zip(futures, jobs, strict=True)}
    reported: set[str] = set()

    def report(future: Any) -> None:
        try:
            row = future.result()
        except Exception as e:  # the worker died or could not run the task: this pair fails, not the batch
            row = {"id": by_key[future.key].pair.id, "status": "failed", "error": f"{type(e).__name__}: {e}"}
        if row is not None:
            on_row(row)
        reported.add(future.key)  # after on_row: a Ctrl-C in between reports it again below, not never

    try:
        for future in as_completed(futures):
            report(future)
    except KeyboardInterrupt:
        stop.set()  # type: ignore[attr-defined]
        try:
            dask_wait(futures, timeout=120)  # the running jobs kill their elastix and return
        except TimeoutError:
            note("some workers did not answer the stop within 120 s")
        for future in futures:
            if future.key not in reported and future.status == "finished":
                report(future)
        raise
