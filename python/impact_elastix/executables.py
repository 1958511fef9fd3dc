"""Running the packaged elastix and transformix executables.

Interruptions: elastix runs in its own session, so a terminal's Ctrl-C reaches only Python, which
then kills it (``run``'s ``finally``); the kernel kills it too when Python dies without cleaning up
(``PR_SET_PDEATHSIG``). SIGTERM, while elastix runs, becomes the exception ``Terminated`` so that
the same cleanup runs. Results are written into a hidden staging folder inside the output folder
(``staged_output``) and move into place only when the run has succeeded: an interrupted or failed
run leaves no result in the output folder, only its log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from . import elastix_executable, transformix_executable

_STAGING_PREFIX = ".impact-elastix-partial-"
_RESUMED = "Resuming elastix."  # what elastix logs after an exception it does not stop for
_LOGS = ("elastix.log", "transformix.log")


class ElastixError(RuntimeError):
    """elastix or transformix failed; the message carries elastix's own error text."""


class Terminated(SystemExit):
    """SIGTERM arrived while elastix ran; exits with 128 + SIGTERM, as the default action would."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def _error_text(log: str) -> str:
    """The part of an elastix log that says what went wrong: ITK's exception description first."""
    lines = log.splitlines()
    for marker in ("Description:", "ERROR", "Error"):
        hits = [i for i, ln in enumerate(lines) if marker in ln and "is not installed" not in ln]
        if hits:
            return "\n".join(lines[hits[0] : hits[0] + 20])
    return "\n".join(lines[-25:])


def _exit_text(returncode: int) -> str:
    """``exit 1``, or the signal that ended the process by name (a crash or a kill, not an error message)."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = {"SIGXFSZ": " (file size limit exceeded)", "SIGKILL": " (killed, e.g. out of memory)"}.get(name, "")
    return f"killed by {name}{hint}"


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """preexec_fn: the child gets SIGKILL when this process ends, even by SIGKILL (Linux only)."""
    if _libc is None:
        return None
    prctl = _libc.prctl

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os._exit(1)

    return child


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` (so ``finally`` blocks run) instead of
    ending the process on the spot. Only where Python lets us (the main thread) and only when the
    application has not installed its own SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def raise_terminated(_signum: int, _frame: FrameType | None) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving during the block take effect after it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    # A handler installed outside Python reads as None and could not be put back: left alone.
    saved = {s: h for s in (signal.SIGINT, signal.SIGTERM) if (h := signal.getsignal(s)) is not None}
    for s in saved:
        signal.signal(s, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)


def _publish(staging: Path, out: Path) -> None:
    """Moves staged files into ``out``; TransformParameters files last, so that the last one's
    presence means the whole result is there."""
    entries = sorted(staging.iterdir(), key=lambda p: (p.name.startswith("TransformParameters."), p.name))
    for entry in entries:
        target = out / entry.name
        if entry.is_dir() and target.is_dir():
            _publish(entry, target)
        else:
            os.replace(entry, target)


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A fresh folder inside ``out`` (same file system: moves are renames) for elastix's ``-out``.

    When the block succeeds its files move into ``out``, with the staging folder's path in them
    (elastix writes ``InitialTransformParameterFileName`` of chained maps) replaced by ``out``'s.
    When it fails or is interrupted, only the log moves (it says what happened); the rest is deleted.
    """
    out = Path(out).absolute()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    except OSError as e:
        raise OSError(e.errno, f"output folder {out} cannot be written: {e.strerror}") from e
    try:
        yield staging
        with _signals_deferred():
            for path in staging.glob("TransformParameters*.txt"):
                path.write_text(path.read_text().replace(str(staging), str(out)))
            _publish(staging, out)
    except BaseException:
        for name in _LOGS:
            if (staging / name).is_file():
                with contextlib.suppress(OSError):
                    os.replace(staging / name, out / name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run(
    cmd: list[str],
    *,
    on_line: Callable[[str], None] | None = None,
    verbose: bool = False,
    cwd: Path | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> str:
    """Runs elastix/transformix (in ``cwd``), streaming its console output line by line; returns that output.

    ``on_start`` receives the started process (for a caller that samples its memory or stops it).
    Raises ElastixError with elastix's own error text when it fails. However this function is left
    (an exception in ``on_line``, Ctrl-C, SIGTERM), the process is gone when it returns.
    """
    with terminate_as_exception():
        proc = subprocess.Popen(
            cmd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
            errors="replace",
            cwd=cwd,
            start_new_session=True,  # its own process group: the terminal's Ctrl-C goes to Python only
            preexec_fn=_die_with_parent(os.getpid()),
        )
        if on_start is not None:
            on_start(proc)
        lines = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if verbose:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            proc.wait()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    log = "".join(lines)
    if proc.returncode != 0:
        raise ElastixError(f"{Path(cmd[0]).name} failed ({_exit_text(proc.returncode)}):\n{_error_text(log)}")
    if _RESUMED in log:
        # elastix logs an exception in writing an output (result image, pyramid) and exits 0, leaving
        # a missing or half-written file (measured: a full disk): a failure, not a result.
        raise ElastixError(f"{Path(cmd[0]).name} could not write an output (exit 0):\n{_error_text(log)}")
    return log


def _options(*pairs: tuple[str, object]) -> list[str]:
    """``[flag, value, ...]`` for the pairs whose value is given (not None)."""
    return [text for flag, value in pairs if value is not None for text in (flag, str(value))]


def elastix_command(
    fixed: str | Path,
    moving: str | Path,
    parameter_files: Sequence[str | Path],
    out: str | Path,
    *,
    initial_transform: str | Path | None = None,
    fixed_mask: str | Path | None = None,
    moving_mask: str | Path | None = None,
    fixed_points: str | Path | None = None,
    moving_points: str | Path | None = None,
    threads: int | None = None,
    executable: str | Path | None = None,
) -> list[str]:
    """The command line ``elastix -f -m [-fMask -mMask] -p ... [-t0 -fp -mp -threads] -out``: every
    elastix command of the package, its tests and benchmarks. ``executable``: default our elastix."""
    cmd = [str(executable or elastix_executable()), "-f", str(fixed), "-m", str(moving)]
    cmd += _options(("-fMask", fixed_mask), ("-mMask", moving_mask))
    for p in parameter_files:
        cmd += ["-p", str(p)]
    cmd += _options(("-t0", initial_transform), ("-fp", fixed_points), ("-mp", moving_points), ("-threads", threads))
    return [*cmd, "-out", str(out)]


def transformix_command(
    transform_parameters: str | Path,
    out: str | Path,
    *,
    image: str | Path | None = None,
    points: str | Path | None = None,
    jacobian: str | None = None,
    jacobian_matrix: str | None = None,
    threads: int | None = None,
    executable: str | Path | None = None,
) -> list[str]:
    """The command line ``transformix -tp [-in -def -jac -jacmat -threads] -out``: ``image`` to warp,
    ``points`` a point file or ``"all"`` (the deformation field), ``jacobian`` / ``jacobian_matrix``
    ``"all"`` (the determinant / the full spatial Jacobian). ``executable``: default our transformix."""
    cmd = [str(executable or transformix_executable()), "-tp", str(transform_parameters)]
    cmd += _options(
        ("-in", image), ("-def", points), ("-jac", jacobian), ("-jacmat", jacobian_matrix), ("-threads", threads)
    )
    return [*cmd, "-out", str(out)]


def run_elastix(
    fixed: str | Path,
    moving: str | Path,
    parameter_files: Sequence[str | Path],
    out: str | Path,
    *,
    initial_transform: str | Path | None = None,
    fixed_mask: str | Path | None = None,
    moving_mask: str | Path | None = None,
    fixed_points: str | Path | None = None,
    moving_points: str | Path | None = None,
    threads: int | None = None,
    verbose: bool = False,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Path:
    """Runs ``elastix_command`` (in ``cwd``: relative model paths resolve there) into a staged ``out``;
    returns the last ``TransformParameters.N.txt``. ``run`` says what the other arguments do."""
    out = Path(out)
    with staged_output(out) as staging:
        cmd = elastix_command(
            fixed,
            moving,
            parameter_files,
            staging,
            initial_transform=initial_transform,
            fixed_mask=fixed_mask,
            moving_mask=moving_mask,
            fixed_points=fixed_points,
            moving_points=moving_points,
            threads=threads,
        )
        run(cmd, verbose=verbose, on_line=on_line, cwd=cwd, on_start=on_start)
    return out / f"TransformParameters.{len(parameter_files) - 1}.txt"


def run_transformix(
    transform_parameters: str | Path,
    out: str | Path,
    *,
    image: str | Path | None = None,
    points: str | Path | None = None,
    jacobian: str | None = None,
    jacobian_matrix: str | None = None,
    threads: int | None = None,
    verbose: bool = False,
) -> Path:
    """Runs ``transformix_command`` into a staged ``out``; returns ``out``."""
    out = Path(out)
    with staged_output(out) as staging:
        cmd = transformix_command(
            transform_parameters,
            staging,
            image=image,
            points=points,
            jacobian=jacobian,
            jacobian_matrix=jacobian_matrix,
            threads=threads,
        )
        run(cmd, verbose=verbose)
    return out
