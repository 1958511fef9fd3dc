"""Benchmark cases, each with a ground truth: the lung CT pair, and synthetic deformations of real images.

Synthetic cases: fixed = original warped by a known smooth B-spline deformation T_true (seeded),
moving = original (multimodal case: through a non-monotonic intensity map). A registration that
finds T with fixed(x) ~ moving(T(x)) should give T = T_true; the error is the mean distance between
the two displacement fields over the foreground.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from impact_elastix.data import elastix_testing_data
from impact_elastix.executables import run_transformix
from impact_elastix.lung import landmark_tre, lung_case
from impact_elastix.mha import Geometry, read_mha, write_mha
from impact_elastix.parameter_object import read_parameter_file, write_parameter_file


@dataclass
class Case:
    name: str
    dimension: int
    fixed: Path
    moving: Path
    initial: Path | None
    evaluate: Callable[[Path | None], dict[str, float]]  # transform file (None: start) -> accuracy figures
    primary: str  # the accuracy figure the table shows
    models: dict[str, Path] = field(default_factory=dict)  # which models suit this case
    voxel: float = 1.5  # mm at which the models see the images


def _field(transform: Path, work: Path) -> np.ndarray:
    """The displacement field (z, y, x, D) of a transform, on its fixed grid."""
    out = run_transformix(transform, work / "def", deformation_field=True)
    return read_mha(out / "deformationField.mha")[0].astype(np.float64)


def _with(transform: Path, work: Path, name: str, **changes: object) -> Path:
    m = read_parameter_file(transform) | {
        k: tuple(str(v) for v in (vs if isinstance(vs, list) else [vs])) for k, vs in changes.items()
    }
    return write_parameter_file(m, work / name)


def _bspline_truth(geometry: Geometry, grid_mm: float, sigma_mm: float, seed: int, path: Path) -> Path:
    """A smooth random B-spline transform over an image (coefficients 0 near the border)."""
    dim = len(geometry.size)
    extent = geometry.size * geometry.spacing
    grid = np.ceil(extent / grid_mm).astype(int) + 3
    origin = geometry.origin - grid_mm  # one control point outside the image on the low side
    rng = np.random.default_rng(seed)
    coefficients = rng.normal(0, sigma_mm, (dim, *reversed(grid.tolist())))
    interior = np.zeros(tuple(reversed(grid.tolist())), dtype=bool)
    interior[(slice(2, -2),) * dim] = True
    coefficients[:, ~interior] = 0
    m = {
        "Transform": "BSplineTransform",
        "NumberOfParameters": coefficients.size,
        "TransformParameters": [f"{v:.6f}" for v in coefficients.reshape(-1)],
        "InitialTransformParameterFileName": "NoInitialTransform",
        "HowToCombineTransforms": "Compose",
        "FixedImageDimension": dim,
        "MovingImageDimension": dim,
        "FixedInternalImagePixelType": "float",
        "MovingInternalImagePixelType": "float",
        "Size": geometry.size.tolist(),
        "Index": [0] * dim,
        "Spacing": geometry.spacing.tolist(),
        "Origin": geometry.origin.tolist(),
        "Direction": geometry.direction.T.reshape(-1).tolist(),
        "UseDirectionCosines": "true",
        "GridSize": grid.tolist(),
        "GridIndex": [0] * dim,
        "GridSpacing": [grid_mm] * dim,
        "GridOrigin": origin.tolist(),
        "GridDirection": geometry.direction.T.reshape(-1).tolist(),
        "BSplineTransformSplineOrder": 3,
        "UseCyclicTransform": "false",
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "FinalBSplineInterpolationOrder": 3,
        "Resampler": "DefaultResampler",
        "DefaultPixelValue": 0,
        "ResultImagePixelType": "float",
        "ResultImageFormat": "mha",
    }
    return write_parameter_file(m, path)


def _synthetic(
    name: str,
    image: np.ndarray,
    geometry: Geometry,
    work: Path,
    *,
    grid_mm: float,
    sigma_mm: float,
    intensity: Callable[[np.ndarray], np.ndarray] | None,
    foreground: np.ndarray,
) -> Case:
    work.mkdir(parents=True, exist_ok=True)
    original = write_mha(
        work / "original.mha",
        image.astype(np.float32),
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
    )
    truth = _bspline_truth(geometry, grid_mm, sigma_mm, 7, work / "truth.txt")
    warped = run_transformix(truth, work / "warp", image=original) / "result.mha"
    fixed = warped.rename(work / "fixed.mha")
    moving = original
    if intensity is not None:
        moving = write_mha(
            work / "moving.mha",
            intensity(image).astype(np.float32),
            spacing=geometry.spacing,
            origin=geometry.origin,
            direction=geometry.direction,
        )
    truth_field = _field(truth, work)

    def evaluate(transform: Path | None) -> dict[str, float]:
        if transform is None:
            error = np.linalg.norm(truth_field, axis=-1)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                error = np.linalg.norm(_field(transform, Path(tmp)) - truth_field, axis=-1)
        return {"field_error_mm": float(error[foreground].mean())}

    return Case(name, image.ndim, fixed, moving, None, evaluate, "field_error_mm")


def lung(work: Path) -> Case:
    case = lung_case()
    data = case.fixed.parent
    fixed_mask = read_mha(case.fixed_mask)[0] > 0

    def evaluate(transform: Path | None) -> dict[str, float]:
        t = transform or case.affine
        with tempfile.TemporaryDirectory() as tmp:
            nearest = _with(
                t,
                Path(tmp),
                "nn.txt",
                ResampleInterpolator="FinalNearestNeighborInterpolator",
                ResultImagePixelType="unsigned char",
                ResultImageFormat="mha",
            )
            warped = run_transformix(nearest, Path(tmp) / "mask", image=case.moving_mask) / "result.mha"
            mask = read_mha(warped)[0] > 0
        dice = 2 * (mask & fixed_mask).sum() / (mask.sum() + fixed_mask.sum())
        return {"tre_mm": float(landmark_tre(case, t).mean()), "lung_dice": float(dice)}

    del work
    return Case(
        "lung CT pair",
        3,
        case.fixed,
        case.moving,
        case.affine,
        evaluate,
        "tre_mm",
        {"M730": data / "M730_1_Layers.pt", "MIND": data / "R1D2_2D.pt"},
    )


def brain2d(work: Path) -> Case:
    data = elastix_testing_data()
    image, geometry = read_mha(data / "2DMRI-T1_brain.mha")
    image = image.astype(np.float32)
    case = _synthetic(
        "2D brain MRI, synthetic B-spline",
        image,
        geometry,
        work / "brain2d",
        grid_mm=32,
        sigma_mm=6.0,
        intensity=None,
        foreground=image > 0.1 * image.max(),
    )
    case.models = {"MIND": data / "R1D2_2D.pt"}
    case.voxel = 1.0
    return case


def multimodal3d(work: Path) -> Case:
    """A lung CT crop against a non-monotonic remapping of itself (air and bone both dark, tissue bright)."""
    data = elastix_testing_data()
    image, g = read_mha(data / "3DCT_lung_baseline.mha")
    z0, y0, x0 = 30, 40, 40
    crop = image[z0 : z0 + 64, y0 : y0 + 80, x0 : x0 + 96].astype(np.float32)
    origin = g.origin + g.direction @ (np.array([x0, y0, z0]) * g.spacing)
    geometry = Geometry(np.array(crop.shape[::-1]), origin, g.spacing, g.direction)

    def remap(hu: np.ndarray) -> np.ndarray:
        u = np.clip((hu + 1000) / 1400, 0, 1)
        return 1000 * (1 - np.abs(2 * u - 1))

    case = _synthetic(
        "3D CT vs remapped CT, synthetic B-spline",
        crop,
        geometry,
        work / "multimodal3d",
        grid_mm=24,
        sigma_mm=5.0,
        intensity=remap,
        foreground=crop > -900,
    )
    case.models = {"M730": data / "M730_1_Layers.pt", "MIND": data / "R1D2_2D.pt"}
    return case


CASES: dict[str, Callable[[Path], Case]] = {"lung": lung, "brain2d": brain2d, "multimodal3d": multimodal3d}
