"""Running the packaged elastix and transformix executables."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import elastix_executable, transformix_executable


class ElastixError(RuntimeError):
    """elastix or transformix failed; the message carries elastix's own error text."""


def _error_text(log: str) -> str:
    """The part of an elastix log that says what went wrong: ITK's exception description first."""
    lines = log.splitlines()
    for marker in ("Description:", "ERROR", "Error"):
        hits = [i for i, ln in enumerate(lines) if marker in ln and "is not installed" not in ln]
        if hits:
            return "\n".join(lines[hits[0] : hits[0] + 20])
    return "\n".join(lines[-25:])


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
    Raises ElastixError with elastix's own error text when it fails.
    """
    with subprocess.Popen(
        cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1, errors="replace", cwd=cwd
    ) as proc:
        assert proc.stdout is not None
        if on_start is not None:
            on_start(proc)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if verbose:
                sys.stdout.write(line)
                sys.stdout.flush()
            if on_line is not None:
                on_line(line.rstrip("\n"))
    log = "".join(lines)
    if proc.returncode != 0:
        raise ElastixError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{_error_text(log)}")
    return log


def run_elastix(
    fixed: str | Path,
    moving: str | Path,
    parameter_files: Sequence[str | Path],
    out: str | Path,
    *,
    initial_transform: str | Path | None = None,
    fixed_mask: str | Path | None = None,
    moving_mask: str | Path | None = None,
    threads: int | None = None,
    verbose: bool = False,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Path:
    """Runs ``elastix -f -m -p ... -out`` (in ``cwd``: relative model paths resolve there); returns the
    last ``TransformParameters.N.txt``."""
    out = Path(out)
    cmd = [str(elastix_executable()), "-f", str(fixed), "-m", str(moving), "-out", str(out)]
    for p in parameter_files:
        cmd += ["-p", str(p)]
    for flag, value in (("-t0", initial_transform), ("-fMask", fixed_mask), ("-mMask", moving_mask)):
        if value is not None:
            cmd += [flag, str(value)]
    if threads is not None:
        cmd += ["-threads", str(threads)]
    out.mkdir(parents=True, exist_ok=True)
    run(cmd, verbose=verbose, on_line=on_line, cwd=cwd, on_start=on_start)
    return out / f"TransformParameters.{len(parameter_files) - 1}.txt"


def run_transformix(
    transform_parameters: str | Path,
    out: str | Path,
    *,
    image: str | Path | None = None,
    points: str | Path | None = None,
    deformation_field: bool = False,
    verbose: bool = False,
) -> Path:
    """Runs ``transformix -tp ... -out`` with ``-in``, ``-def`` and/or ``-def all``; returns ``out``."""
    out = Path(out)
    cmd = [str(transformix_executable()), "-tp", str(transform_parameters), "-out", str(out)]
    if image is not None:
        cmd += ["-in", str(image)]
    if points is not None:
        cmd += ["-def", str(points)]
    elif deformation_field:
        cmd += ["-def", "all"]
    out.mkdir(parents=True, exist_ok=True)
    run(cmd, verbose=verbose)
    return out
