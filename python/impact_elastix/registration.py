"""itk-elastix's functional API on our elastix/transformix: the same names, keywords and results.

``elastix_registration_method`` and the ``transformix_*`` functions take ``itk.Image``,
``SimpleITK.Image``, file paths or NumPy arrays, and parameter objects of ours or of itk-elastix;
results come back in the type that came in. Each call runs the packaged executables (so IMPACT's
plugin and LibTorch live in their own process) on MetaImage files in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .executables import run_elastix, run_transformix
from .images import Image, ImageLike, check_mask, check_pair, load_image, result_like, write_input
from .parameter_object import ParameterMap, ParameterObject, read_parameter_file, write_parameter_file
from .points import parse_transformix_points

_OUTPUT_KEYS = ("WriteResultImage", "ResultImageFormat", "ResultImagePixelType")


def _parameter_object(value: Any, name: str) -> ParameterObject:
    if value is None:
        raise ValueError(f"{name} is required: a ParameterObject, a dict, or parameter file path(s)")
    po = ParameterObject.from_any(value, name)
    if len(po) == 0:
        raise ValueError(f"{name} has no parameter maps")
    return po


def _check_argument(name: str, value: Any, allowed: tuple[type, ...], text: str) -> None:
    """TypeError naming the argument unless ``value`` is one of ``allowed`` (a bool is no int here,
    and a string is no number: "2" is refused, not parsed)."""
    if not isinstance(value, allowed) or (isinstance(value, bool | np.bool_) and bool not in allowed):
        raise TypeError(f"{name} must be {text}, got {value!r} ({type(value).__name__})")


_PATH = (str, os.PathLike)


def _returned_like(po: ParameterObject, like: Any) -> Any:
    """Transform parameters as ``itk.ParameterObject`` when the caller gave one, else ours."""
    is_itk = hasattr(like, "GetNumberOfParameterMaps") and not isinstance(like, ParameterObject)
    return po.to_itk() if is_itk else po


def _write_chain(maps: list[ParameterMap], directory: Path, stem: str, overrides: ParameterMap) -> Path:
    """Writes maps as a transform chain (file i starts from file i-1); returns the last file."""
    path = None
    for i, m in enumerate(maps):
        m = dict(m) | overrides
        if i > 0:
            m["InitialTransformParameterFileName"] = (str(path),)
        path = write_parameter_file(m, directory / f"{stem}.{i}.txt")
    assert path is not None
    return path


def _check_threads(number_of_threads: int | None) -> None:
    if number_of_threads is None:
        return
    _check_argument("number_of_threads", number_of_threads, (int, np.integer), "an int >= 1 or None")
    if number_of_threads < 1:
        raise ValueError(f"number_of_threads must be >= 1, got {number_of_threads}")


@contextlib.contextmanager
def _folders(output_directory: str | Path | None, image: Image, program: str) -> Iterator[tuple[Path, Path]]:
    """``(tmp, out)`` for one call of ``program`` (elastix, transformix): ``tmp`` holds the files it
    reads and is removed afterwards; its results go to ``out``: ``output_directory``; else, when
    ``image`` is a file path (the result file's path is returned, so it must outlive the call), a new
    temporary folder that is removed if the call fails; else a folder inside ``tmp``."""
    with tempfile.TemporaryDirectory(prefix=f"impact-{program}-") as tmp_name:
        tmp = Path(tmp_name)
        if output_directory is not None:
            yield tmp, Path(output_directory)
        elif image.kind == "path":
            out = Path(tempfile.mkdtemp(prefix=f"impact-{program}-result-"))
            try:
                yield tmp, out
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
        else:
            yield tmp, tmp / "out"


def _keep_log(out: Path, name: str, log_to_file: bool, log_file_name: str | None) -> None:
    log = out / name
    if not log_to_file:
        log.unlink(missing_ok=True)
    elif log_file_name and log.exists():
        log.replace(out / log_file_name)


def elastix_registration_method(
    fixed_image: ImageLike,
    moving_image: ImageLike,
    parameter_object: Any = None,
    fixed_mask: ImageLike | None = None,
    moving_mask: ImageLike | None = None,
    initial_transform_parameter_file_name: str | Path | None = None,
    initial_transform_parameter_object: Any = None,
    fixed_point_set_file_name: str | Path | None = None,
    moving_point_set_file_name: str | Path | None = None,
    output_directory: str | Path | None = None,
    log_to_console: bool = False,
    log_to_file: bool = False,
    log_file_name: str | None = None,
    number_of_threads: int | None = None,
    on_output_line: Callable[[str], None] | None = None,
) -> tuple[Any, Any]:
    """Registers ``moving_image`` to ``fixed_image``; returns ``(result_image, result_transform_parameters)``.

    As ``itk.elastix_registration_method`` (itk-elastix 0.25), with IMPACT available as
    ``(Metric "Impact")``. ``result_image`` is the moving image resampled onto the fixed grid, in the
    type of ``fixed_image`` (a file path in, the result file's path out, in ``output_directory`` or a
    new temporary directory). ``result_transform_parameters`` is an ``itk.ParameterObject`` when
    ``parameter_object`` was one, else an ``impact_elastix.ParameterObject``; with
    ``initial_transform_parameter_object`` its maps come first, as in itk-elastix.
    ``on_output_line`` receives elastix's console output line by line (progress display).
    Raises ``ElastixError`` with elastix's own message when elastix fails, ``ValueError``/``TypeError``
    for bad inputs before anything runs.
    """
    _RunOptions(output_directory, log_to_console, log_to_file, log_file_name, number_of_threads)
    if on_output_line is not None and not callable(on_output_line):
        raise TypeError(f"on_output_line must be a function of one line (str), got {type(on_output_line).__name__}")
    for name, value in (
        ("initial_transform_parameter_file_name", initial_transform_parameter_file_name),
        ("fixed_point_set_file_name", fixed_point_set_file_name),
        ("moving_point_set_file_name", moving_point_set_file_name),
    ):
        if value is not None:
            _check_argument(name, value, _PATH, "a file path or None")
    fixed = load_image(fixed_image, "fixed_image")
    moving = load_image(moving_image, "moving_image")
    check_pair(fixed, moving)
    masks: dict[str, Image] = {}
    for value, name, image, image_name in (
        (fixed_mask, "fixed_mask", fixed, "fixed_image"),
        (moving_mask, "moving_mask", moving, "moving_image"),
    ):
        if value is not None:
            masks[name] = load_image(value, name, mask=True)
            check_mask(masks[name], image, name, image_name)
    po = _parameter_object(parameter_object, "parameter_object")
    if initial_transform_parameter_file_name is not None and initial_transform_parameter_object is not None:
        raise ValueError("give initial_transform_parameter_file_name or initial_transform_parameter_object, not both")
    initial = None
    if initial_transform_parameter_object is not None:
        initial = _parameter_object(initial_transform_parameter_object, "initial_transform_parameter_object")
    for name, value in (
        ("initial_transform_parameter_file_name", initial_transform_parameter_file_name),
        ("fixed_point_set_file_name", fixed_point_set_file_name),
        ("moving_point_set_file_name", moving_point_set_file_name),
    ):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{name}: file not found: {value}")

    with _folders(output_directory, fixed, "elastix") as (tmp, out):
        mask_files = {name: write_input(mask, tmp / f"{name}.mha", mask=True) for name, mask in masks.items()}
        n = len(po)
        parameter_files = []
        for i, m in enumerate(po.GetParameterMaps()):
            # The last map writes the result image, as MetaImage, for this function to return.
            overrides = {"WriteResultImage": ("true",), "ResultImageFormat": ("mha",)} if i == n - 1 else {}
            if i == n - 1 and "ResultImagePixelType" not in m:
                overrides["ResultImagePixelType"] = ("float",)  # cast to the input's type here, once
            parameter_files.append(write_parameter_file(dict(m) | overrides, tmp / f"parameters.{i}.txt"))
        initial_file = None
        if initial is not None:
            initial_file = _write_chain(initial.GetParameterMaps(), tmp, "initial", {})
        elif initial_transform_parameter_file_name is not None:
            # Absolute: elastix resolves a relative name against the transform file's own folder later.
            initial_file = Path(initial_transform_parameter_file_name).resolve()
        run_elastix(
            write_input(fixed, tmp / "fixed.mha"),
            write_input(moving, tmp / "moving.mha"),
            parameter_files,
            out,
            initial_transform=initial_file,
            fixed_mask=mask_files.get("fixed_mask"),
            moving_mask=mask_files.get("moving_mask"),
            fixed_points=fixed_point_set_file_name,
            moving_points=moving_point_set_file_name,
            threads=number_of_threads,
            verbose=log_to_console,
            on_line=on_output_line,
        )

        result_maps = [read_parameter_file(out / f"TransformParameters.{i}.txt") for i in range(n)]
        for i, m in enumerate(result_maps):
            # The chain is implicit in the object's order (itk-elastix leaves these entries empty).
            if i > 0:
                m["InitialTransformParameterFileName"] = ("",)
            user = po.GetParameterMap(i)
            for key in _OUTPUT_KEYS:
                if key in user:
                    m[key] = user[key]
        if initial is not None:
            result_maps[0]["InitialTransformParameterFileName"] = ("",)
            result_maps = initial.GetParameterMaps() + result_maps
        result = result_like(out / f"result.{n - 1}.mha", fixed, grid=fixed)
        _keep_log(out, "elastix.log", log_to_file, log_file_name)
    return result, _returned_like(ParameterObject(result_maps), parameter_object)


@dataclass(frozen=True)
class _RunOptions:
    """The itk-elastix keywords that elastix_registration_method and every transformix_* function
    take, checked here once, before anything runs."""

    output_directory: str | Path | None
    log_to_console: bool
    log_to_file: bool
    log_file_name: str | None
    number_of_threads: int | None

    def __post_init__(self) -> None:
        if self.output_directory is not None:
            _check_argument("output_directory", self.output_directory, _PATH, "a folder path or None")
        _check_argument("log_to_console", self.log_to_console, (bool, np.bool_), "True or False")
        _check_argument("log_to_file", self.log_to_file, (bool, np.bool_), "True or False")
        if self.log_file_name is not None:
            _check_argument("log_file_name", self.log_file_name, (str,), "a file name or None")
            if not self.log_file_name or Path(self.log_file_name).name != self.log_file_name:
                raise ValueError(f"log_file_name must be a file name in output_directory, got {self.log_file_name!r}")
        _check_threads(self.number_of_threads)


def _transformix(
    moving_image: ImageLike,
    transform_parameter_object: Any,
    outputs: list[str],
    run: _RunOptions,
    *,
    points: str | Path | None = None,
    jacobian: bool = False,
    jacobian_matrix: bool = False,
) -> dict[str, Any]:
    """Runs transformix (``points``, ``jacobian``, ``jacobian_matrix``: as ``transformix_command``'s,
    the booleans for "all"); returns {output file name: result in the moving image's type}."""
    moving = load_image(moving_image, "moving_image")
    po = _parameter_object(transform_parameter_object, "transform_parameter_object")
    last = po.GetParameterMap(len(po) - 1)
    results: dict[str, Any] = {}
    with _folders(run.output_directory, moving, "transformix") as (tmp, out):
        maps = po.GetParameterMaps()
        maps[-1] = {"ResultImagePixelType": ("float",)} | maps[-1]  # cast to the input's type here, once
        chain = _write_chain(maps, tmp, "transform", {"ResultImageFormat": ("mha",)})
        run_transformix(
            chain,
            out,
            image=write_input(moving, tmp / "moving.mha") if "result.mha" in outputs else None,
            points=points,
            jacobian="all" if jacobian else None,
            jacobian_matrix="all" if jacobian_matrix else None,
            threads=run.number_of_threads,
            verbose=run.log_to_console,
        )
        grid = _grid_of(last)
        for name in outputs:
            path = out / name
            if name.endswith(".txt"):
                results[name] = path.read_text()
                continue
            results[name] = result_like(path, moving, grid=grid)
        _keep_log(out, "transformix.log", run.log_to_file, run.log_file_name)
    return results


def _grid_of(m: ParameterMap) -> Image | None:
    """The output grid that a transform map defines (Size, Spacing, Origin, Direction)."""
    try:
        size = [int(v) for v in m["Size"]]
        spacing = np.array([float(v) for v in m["Spacing"]])
        origin = np.array([float(v) for v in m["Origin"]])
        dim = len(size)
        direction = np.array([float(v) for v in m.get("Direction", np.eye(dim).reshape(-1))]).reshape(dim, dim).T
    except (KeyError, ValueError):
        return None
    return Image("numpy", np.zeros(tuple(reversed(size)), dtype=np.uint8), spacing, origin, direction)


def transformix_filter(
    moving_image: ImageLike,
    transform_parameter_object: Any,
    fixed_point_set_file_name: str | Path | None = None,
    compute_spatial_jacobian: bool = False,
    compute_determinant_of_spatial_jacobian: bool = False,
    compute_deformation_field: bool = False,
    output_directory: str | Path | None = None,
    log_to_console: bool = False,
    log_to_file: bool = False,
    log_file_name: str | None = None,
    number_of_threads: int | None = None,
) -> Any:
    """Warps ``moving_image`` with the transform; returns it in its own type (as ``itk.transformix_filter``).

    The other ``compute_*`` outputs and the transformed point set are written to ``output_directory``
    (``deformationField.mha``, ``spatialJacobian.mha``, ``fullSpatialJacobian.mha``, ``outputpoints.txt``).
    """
    points = "all" if compute_deformation_field else None
    if fixed_point_set_file_name is not None:
        _check_argument("fixed_point_set_file_name", fixed_point_set_file_name, _PATH, "a file path or None")
        if not Path(fixed_point_set_file_name).is_file():
            raise FileNotFoundError(f"fixed_point_set_file_name: file not found: {fixed_point_set_file_name}")
        if compute_deformation_field:
            raise ValueError("transformix takes either a point set or compute_deformation_field, not both")
        points = fixed_point_set_file_name
    extra = points is not None or compute_determinant_of_spatial_jacobian or compute_spatial_jacobian
    if extra and output_directory is None:
        raise ValueError("the point set and compute_* outputs are written to output_directory; give output_directory")
    run = _RunOptions(output_directory, log_to_console, log_to_file, log_file_name, number_of_threads)
    results = _transformix(
        moving_image,
        transform_parameter_object,
        ["result.mha"],
        run,
        points=points,
        jacobian=compute_determinant_of_spatial_jacobian,
        jacobian_matrix=compute_spatial_jacobian,
    )
    return results["result.mha"]


def transformix_deformation_field(
    moving_image: ImageLike,
    transform_parameter_object: Any,
    output_directory: str | Path | None = None,
    log_to_console: bool = False,
    log_to_file: bool = False,
    log_file_name: str | None = None,
    number_of_threads: int | None = None,
) -> Any:
    """The displacement field T(x) - x on the fixed grid: a D-component vector image (NumPy: ``(z, y, x, D)``)."""
    run = _RunOptions(output_directory, log_to_console, log_to_file, log_file_name, number_of_threads)
    results = _transformix(moving_image, transform_parameter_object, ["deformationField.mha"], run, points="all")
    return results["deformationField.mha"]


def transformix_jacobian(
    moving_image: ImageLike,
    transform_parameter_object: Any,
    output_directory: str | Path | None = None,
    log_to_console: bool = False,
    log_to_file: bool = False,
    log_file_name: str | None = None,
    number_of_threads: int | None = None,
) -> tuple[Any, Any]:
    """``(full_spatial_jacobian, determinant_of_spatial_jacobian)`` on the fixed grid, as itk-elastix returns them.

    The full Jacobian has D*D components per voxel (row-major dT_i/dx_j).
    """
    outputs = ["fullSpatialJacobian.mha", "spatialJacobian.mha"]
    run = _RunOptions(output_directory, log_to_console, log_to_file, log_file_name, number_of_threads)
    results = _transformix(moving_image, transform_parameter_object, outputs, run, jacobian=True, jacobian_matrix=True)
    return results["fullSpatialJacobian.mha"], results["spatialJacobian.mha"]


def transformix_pointset(
    moving_image: ImageLike,
    transform_parameter_object: Any,
    fixed_point_set_file_name: str | Path,
    output_directory: str | Path | None = None,
    log_to_console: bool = False,
    log_to_file: bool = False,
    log_file_name: str | None = None,
    number_of_threads: int | None = None,
    reduce_output: bool = False,
) -> np.ndarray:
    """Maps the points of an elastix point file (fixed space) through the transform.

    Returns the rows of ``outputpoints.txt`` split into strings, as itk-elastix does, or with
    ``reduce_output=True`` the mapped world points as a float array (N, D).
    """
    _check_argument("fixed_point_set_file_name", fixed_point_set_file_name, _PATH, "a file path")
    if not Path(fixed_point_set_file_name).is_file():
        raise FileNotFoundError(f"fixed_point_set_file_name: file not found: {fixed_point_set_file_name}")
    run = _RunOptions(output_directory, log_to_console, log_to_file, log_file_name, number_of_threads)
    results = _transformix(
        moving_image, transform_parameter_object, ["outputpoints.txt"], run, points=fixed_point_set_file_name
    )
    rows = [line.split() for line in results["outputpoints.txt"].splitlines() if line.strip()]
    if not reduce_output:
        return np.array(rows, dtype=str)
    return parse_transformix_points(results["outputpoints.txt"])
