"""elastix point files and target registration error (TRE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_points(path: str | Path) -> tuple[np.ndarray, bool]:
    """Reads an elastix point set file: ``index`` or ``point``, the count, then one point per line.

    Returns the points (N, D) and whether they are voxel indices.
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    is_index = lines[0][0].lower() == "index"
    count = int(lines[1][0])
    points = np.array([[float(v) for v in ln] for ln in lines[2 : 2 + count]])
    if points.shape[0] != count:
        raise ValueError(f"{path}: header says {count} points, found {points.shape[0]}")
    return points, is_index


def parse_transformix_points(text: str) -> np.ndarray:
    """The ``OutputPoint`` column of transformix's ``outputpoints.txt`` text as (N, D)."""
    return np.array(
        [
            [float(v) for v in line.split("OutputPoint = [")[1].split("]")[0].split()]
            for line in text.splitlines()
            if "OutputPoint = [" in line
        ]
    )


def read_transformix_points(path: str | Path) -> np.ndarray:
    return parse_transformix_points(Path(path).read_text())


def write_points(path: str | Path, points: np.ndarray) -> Path:
    """Writes world points (N, D) as an elastix ``point`` file."""
    rows = "\n".join(" ".join(f"{v:.6f}" for v in p) for p in points)
    Path(path).write_text(f"point\n{len(points)}\n{rows}\n")
    return Path(path)


def tre(mapped: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean distance per landmark (N,)."""
    return np.linalg.norm(np.asarray(mapped) - np.asarray(target), axis=1)
