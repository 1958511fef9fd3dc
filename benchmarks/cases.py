"""Benchmark cases, each with a ground truth: the lung CT pair, and synthetic deformations of real images.

Synthetic cases: fixed = original warped by a known smooth B-spline deformation T_true (seeded),
moving = original (multimodal cases: through a non-monotonic intensity map, or the same anatomy in
another MRI contrast). A registration that
finds T with fixed(x) ~ moving(T(x)) should give T = T_true; the error is the mean distance between
the two displacement fields over the foreground.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from impact_elastix.executables import run_transformix
from impact_elastix.mha import Geometry, read_mha, write_mha
from impact_elastix.parameter_object import read_parameter_file, write_parameter_file

from examples.lung import landmark_tre, lung_case
from examples.testing_data import elastix_testing_data


@dataclass
class Case:
    name: str
    dimension: int
    fixed: Path
    moving: Path
    initial: Path | None
    evaluate: Callable[[Path | None], dict[str, float]]  # transform file (None: start) -> accuracy figures
    models: dict[str, Path] = field(default_factory=dict)  # which models suit this case
    voxel: float | tuple[float, ...] = 1.5  # mm at which the models see the images (or one per level)
    modes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per model label; default both
    mixed_precision: bool = True  # also a Jacobian UseMixedPrecision row per model
    levels: int | None = None  # the case's own schedule (default: the command line's)
    iterations: int | None = None
    map: dict = field(default_factory=dict)  # entries that replace the common map's (pyramid, grid, ...)


def _field(transform: Path, work: Path) -> np.ndarray:
    """The displacement field (z, y, x, D) of a transform, on its fixed grid."""
    out = run_transformix(transform, work / "def", points="all")
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
    moving_image: np.ndarray | None,
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
    if moving_image is not None:
        moving = write_mha(
            work / "moving.mha",
            moving_image.astype(np.float32),
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

    return Case(name, image.ndim, fixed, moving, None, evaluate)


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
        moving_image=None,
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
    origin = g.index_to_world(np.array([x0, y0, z0]))
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
        moving_image=remap(crop),
        foreground=crop > -900,
    )
    case.models = {"M730": data / "M730_1_Layers.pt", "MIND": data / "R1D2_2D.pt"}
    return case


def brainweb_folder() -> Path:
    """BrainWeb T1/PD (``$IMPACT_BRAINWEB``, else ``../shared/data/brainweb`` beside the clone)."""
    env = os.environ.get("IMPACT_BRAINWEB")
    folder = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "brainweb"
    if not (folder / "T1.mha").is_file() or not (folder / "PD.mha").is_file():
        raise FileNotFoundError(f"BrainWeb T1.mha/PD.mha not found in {folder}: set IMPACT_BRAINWEB to their folder")
    return folder


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2 radius + 1)^d box: a voxel stays when its whole box is inside."""
    k = 2 * radius + 1
    count = np.pad(mask.astype(np.int32), radius)  # box sums, one axis at a time
    for axis in range(mask.ndim):
        n = count.shape[axis]
        prefix = np.concatenate([np.zeros_like(np.take(count, [0], axis=axis)), np.cumsum(count, axis=axis)], axis=axis)
        count = np.take(prefix, np.arange(k, n + 1), axis=axis) - np.take(prefix, np.arange(0, n + 1 - k), axis=axis)
    return count == k**mask.ndim


def brainweb(work: Path) -> Case:
    """Simulated 1 mm brain MRI: T1 warped by a known smooth deformation (fixed) against PD (moving).

    Both z-scored. The issue-12 map: generic pyramid 4/2/1 (smoothing and resampling), B-spline with
    a 10 mm final grid (GridSpacingSchedule 4 2 1), linear interpolation, 3 levels x 100 iterations;
    models see the images at 4/2/1 mm. Error: dense, over the brain (the head eroded by 12 mm).
    """
    folder = brainweb_folder()
    t1, geometry = read_mha(folder / "T1.mha")
    pd, _ = read_mha(folder / "PD.mha")
    t1 = t1.astype(np.float32)
    pd = pd.astype(np.float32)
    brain = _erode(t1 > 0.1 * t1.max(), 12)
    case = _synthetic(
        "3D brain MRI T1 vs PD (BrainWeb), synthetic B-spline",
        (t1 - t1.mean()) / t1.std(),
        geometry,
        work / "brainweb",
        grid_mm=48,
        sigma_mm=16.0,
        moving_image=(pd - pd.mean()) / pd.std(),
        foreground=brain,
    )
    data = elastix_testing_data()
    mind3d = work / "brainweb" / "MIND_R1D2_3D.pt"
    if not mind3d.is_file():
        from impact_elastix.models import export_mind

        export_mind(str(mind3d), "R1D2", 3)
    case.models = {"MIND 2D": data / "R1D2_2D.pt", "MIND 3D": mind3d, "MIND 3D built-in": Path("MIND/R1D2")}
    case.modes = {}  # both modes for every model
    case.mixed_precision = False
    case.voxel = (4.0, 2.0, 1.0)
    case.levels, case.iterations = 3, 100
    level = ["4", "2", "1"]
    case.map = {
        "FixedImagePyramid": "FixedGenericImagePyramid",
        "MovingImagePyramid": "MovingGenericImagePyramid",
        "FixedImagePyramidRescaleSchedule": [v for v in level for _ in range(3)],
        "MovingImagePyramidRescaleSchedule": [v for v in level for _ in range(3)],
        "FixedImagePyramidSmoothingSchedule": [v for v in level for _ in range(3)],
        "MovingImagePyramidSmoothingSchedule": [v for v in level for _ in range(3)],
        "FinalGridSpacingInPhysicalUnits": 10,
        "GridSpacingSchedule": level,
        "Interpolator": "LinearInterpolator",
    }
    return case


CASES: dict[str, Callable[[Path], Case]] = {
    "lung": lung,
    "brain2d": brain2d,
    "multimodal3d": multimodal3d,
    "brainweb": brainweb,
}
