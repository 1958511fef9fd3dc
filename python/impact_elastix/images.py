"""Images in and out of elastix: ``itk.Image``, ``SimpleITK.Image``, file paths, NumPy arrays.

Every input becomes a MetaImage file that elastix reads; every result comes back in the type of the
input it stands for, with the geometry (origin, spacing, direction) of that input bit for bit.
NumPy arrays are in ITK's array order ``(z, y, x)``; geometry vectors are x first, as in ITK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .mha import read_geometry, read_mha, write_mha


@dataclass(frozen=True)
class ArrayImage:
    """A NumPy array ``(z, y, x)`` with its geometry; what ``image_from_array`` returns."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray = field(repr=False)


ImageLike = str | Path | np.ndarray | ArrayImage | Any  # Any: itk.Image, SimpleITK.Image


def image_from_array(
    array: np.ndarray,
    spacing: tuple[float, ...] | list[float] | None = None,
    origin: tuple[float, ...] | list[float] | None = None,
    direction: np.ndarray | list[list[float]] | None = None,
) -> ArrayImage:
    """A NumPy image ``(z, y, x)`` with spacing/origin (x first) and a (D, D) direction matrix."""
    array = np.asarray(array)
    dim = array.ndim
    spacing_t = tuple(float(v) for v in (spacing if spacing is not None else [1.0] * dim))
    origin_t = tuple(float(v) for v in (origin if origin is not None else [0.0] * dim))
    direction_a = np.eye(dim) if direction is None else np.asarray(direction, dtype=float)
    if len(spacing_t) != dim or len(origin_t) != dim or direction_a.shape != (dim, dim):
        raise ValueError(
            f"a {dim}D array needs {dim} spacing and origin values and a {dim}x{dim} direction; got "
            f"spacing {spacing_t}, origin {origin_t}, direction of shape {direction_a.shape}"
        )
    if any(s <= 0 for s in spacing_t):
        raise ValueError(f"spacing must be positive, got {spacing_t}")
    return ArrayImage(array, spacing_t, origin_t, direction_a)


@dataclass
class Image:
    """An input image: its voxels and geometry, and how to hand a result back in its own type."""

    kind: str  # "itk", "sitk", "numpy", "array", "path"
    array: np.ndarray | None  # (z, y, x); None for a path elastix reads itself
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    path: Path | None = None

    @property
    def dimension(self) -> int:
        return len(self.spacing)

    @property
    def size(self) -> tuple[int, ...]:
        """Voxels per axis, x first."""
        if self.array is not None:
            return tuple(reversed(self.array.shape))
        assert self.path is not None
        return tuple(int(v) for v in read_geometry(self.path).size)


def load_image(value: ImageLike, name: str) -> Image:
    """Any supported image as an ``Image``; errors name the argument (``fixed_image`` ...)."""
    if isinstance(value, str | Path):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: file not found: {path}")
        if path.suffix.lower() in (".mha", ".mhd"):
            g = read_geometry(path)
            return Image("path", None, g.spacing, g.origin, g.direction, path)
        # Other formats (NIfTI, NRRD, ...) are read by elastix itself; their geometry is not needed here.
        return Image("path", None, np.ones(0), np.zeros(0), np.eye(0), path)
    if isinstance(value, ArrayImage):
        image = Image(
            "array",
            np.asarray(value.array),
            np.array(value.spacing),
            np.array(value.origin),
            np.asarray(value.direction, dtype=float),
        )
    elif isinstance(value, np.ndarray):
        dim = value.ndim
        image = Image("numpy", value, np.ones(dim), np.zeros(dim), np.eye(dim))
    elif type(value).__module__.startswith("SimpleITK"):
        import SimpleITK as sitk

        if value.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"{name} has {value.GetNumberOfComponentsPerPixel()} components per pixel; "
                "elastix registers scalar images"
            )
        dim = value.GetDimension()
        image = Image(
            "sitk",
            sitk.GetArrayFromImage(value),
            np.array(value.GetSpacing()),
            np.array(value.GetOrigin()),
            np.array(value.GetDirection()).reshape(dim, dim),
        )
    elif hasattr(value, "GetLargestPossibleRegion") and hasattr(value, "GetSpacing"):
        import itk

        array = itk.array_from_image(value)
        dim = value.GetImageDimension()
        if array.ndim != dim:
            raise ValueError(f"{name} has {array.shape[-1]} components per pixel; elastix registers scalar images")
        image = Image(
            "itk",
            array,
            np.array(value.GetSpacing()),
            np.array(value.GetOrigin()),
            itk.array_from_matrix(value.GetDirection()).astype(float),
        )
    else:
        raise TypeError(
            f"{name}: expected an itk.Image, a SimpleITK.Image, a file path or a NumPy array, "
            f"got {type(value).__name__}"
        )
    _check_voxels(image, name)
    return image


def _check_voxels(image: Image, name: str) -> None:
    array = image.array
    assert array is not None
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"{name} is {array.ndim}D (array shape {array.shape}); elastix registers 2D, 3D or 4D images")
    if not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_
    ):
        raise TypeError(f"{name} has pixel type {array.dtype}; use an integer or real (float) pixel type")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if min(array.shape) < 4:
        raise ValueError(f"{name} has size {tuple(reversed(array.shape))} (x first); every axis needs >= 4 voxels")


def check_pair(fixed: Image, moving: Image) -> None:
    if fixed.dimension and moving.dimension and fixed.dimension != moving.dimension:
        raise ValueError(
            f"fixed_image is {fixed.dimension}D but moving_image is {moving.dimension}D; "
            "elastix registers images of the same dimension"
        )


def check_mask(mask: Image, image: Image, name: str, image_name: str) -> None:
    """A mask must match its image's grid and contain at least one voxel."""
    if mask.array is not None:
        if not mask.array.any():
            raise ValueError(f"{name} is empty: no voxel is inside the mask")
    if image.dimension and mask.dimension and mask.dimension != image.dimension:
        raise ValueError(f"{name} is {mask.dimension}D but {image_name} is {image.dimension}D")
    if mask.size != image.size and image.dimension and mask.dimension:
        raise ValueError(f"{name} has size {mask.size} but {image_name} has size {image.size} (x first)")


def write_input(image: Image, path: Path, *, mask: bool = False) -> Path:
    """The file elastix reads for this image (paths pass through untouched)."""
    if image.array is None:
        assert image.path is not None
        return image.path
    array = (image.array != 0).astype(np.uint8) if mask else image.array
    return write_mha(path, array, spacing=image.spacing, origin=image.origin, direction=image.direction)


def result_like(path: Path, like: Image, *, grid: Image | None = None) -> Any:
    """The result file as the type of ``like``; geometry snapped to ``grid`` when it is the same grid.

    elastix writes geometry in text; snapping restores the input's exact doubles when they agree to
    1e-6 relative, so that origin/spacing/direction survive a round trip exactly.
    """
    if like.kind == "path":
        return path
    array, g = read_mha(path)
    vector = array.ndim > len(g.size)  # deformation fields and full Jacobians: components last
    spacing, origin, direction = g.spacing, g.origin, g.direction
    if grid is not None and grid.array is not None and tuple(int(v) for v in g.size) == grid.size:
        scale = max(1.0, float(np.abs(grid.origin).max(initial=0)))
        if (
            np.allclose(spacing, grid.spacing, rtol=1e-6, atol=0)
            and np.allclose(origin, grid.origin, atol=1e-6 * scale)
            and np.allclose(direction, grid.direction, atol=1e-6)
        ):
            spacing, origin, direction = grid.spacing, grid.origin, grid.direction
    if like.array is not None and not vector and array.dtype != like.array.dtype and like.array.dtype != np.bool_:
        array = _cast(array, like.array.dtype)
    if like.kind == "numpy":
        return array
    if like.kind == "array":
        return ArrayImage(array, tuple(spacing.tolist()), tuple(origin.tolist()), direction)
    if like.kind == "sitk":
        import SimpleITK as sitk

        out = sitk.GetImageFromArray(array, isVector=vector)
        out.SetSpacing(spacing.tolist())
        out.SetOrigin(origin.tolist())
        out.SetDirection(direction.reshape(-1).tolist())
        return out
    import itk

    out = itk.image_from_array(np.ascontiguousarray(array), is_vector=vector)
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(origin.tolist())
    out.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return out


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The result in the input's pixel type; integers rounded and clipped to the type's range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return array.astype(dtype)
