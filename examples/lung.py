"""The elastix lung CT pair: registration from its affine start and landmark TRE."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from impact_elastix.executables import run_elastix, run_transformix
from impact_elastix.mha import read_geometry
from impact_elastix.points import read_points, read_transformix_points, tre, write_points

from .testing_data import elastix_testing_data


@dataclass(frozen=True)
class LungCase:
    fixed: Path
    moving: Path
    fixed_mask: Path
    moving_mask: Path
    affine: Path  # transform parameters of the affine start (fixed -> moving)
    fixed_landmarks: np.ndarray  # (10, 3) world
    moving_landmarks: np.ndarray  # (10, 3) world


def lung_case() -> LungCase:
    """The pair, its masks, its affine start and its 10 landmarks (world) from the elastix test data."""
    data = elastix_testing_data()
    fixed, moving = data / "3DCT_lung_baseline.mha", data / "3DCT_lung_followup.mha"
    landmarks = []
    for image, name in ((fixed, "3DCT_lung_baseline.txt"), (moving, "3DCT_lung_followup.txt")):
        points, is_index = read_points(data / name)
        landmarks.append(read_geometry(image).index_to_world(points) if is_index else points)
    return LungCase(
        fixed,
        moving,
        data / "3DCT_lung_baseline_mask.mha",
        data / "3DCT_lung_followup_mask.mha",
        data / "transformparameters.3DCT_lung.affine.txt",
        landmarks[0],
        landmarks[1],
    )


def landmark_tre(case: LungCase, transform_parameters: Path | None) -> np.ndarray:
    """TRE (mm) per landmark after mapping the fixed landmarks with a transform (None: identity)."""
    if transform_parameters is None:
        return tre(case.fixed_landmarks, case.moving_landmarks)
    with tempfile.TemporaryDirectory() as tmp:
        points = write_points(Path(tmp) / "fixed_points.txt", case.fixed_landmarks)
        run_transformix(transform_parameters, Path(tmp) / "out", points=points)
        mapped = read_transformix_points(Path(tmp) / "out" / "outputpoints.txt")
    return tre(mapped, case.moving_landmarks)


def register(
    case: LungCase,
    parameter_map: Path,
    out: Path,
    *,
    masks: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> Path:
    """B-spline registration from the affine start; returns the final transform parameter file.
    ``on_line`` receives elastix's console lines (progress display)."""
    return run_elastix(
        case.fixed,
        case.moving,
        [parameter_map],
        out,
        initial_transform=case.affine,
        fixed_mask=case.fixed_mask if masks else None,
        moving_mask=case.moving_mask if masks else None,
        on_line=on_line,
    )
