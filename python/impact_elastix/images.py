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

from .mha import check_mha, read_geometry, read_mha, writable, write_mha
from .nifti import check_nifti


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
    spacing_t = tuple(_numbers("spacing", spacing if spacing is not None else [1.0] * dim))
    origin_t = tuple(_numbers("origin", origin if origin is not None else [0.0] * dim))
    direction_a = np.eye(dim) if direction is None else _numbers("direction", direction)
    if len(spacing_t) != dim or len(origin_t) != dim or direction_a.shape != (dim, dim):
        raise ValueError(
            f"a {dim}D array needs {dim} spacing and origin values and a {dim}x{dim} direction; got "
            f"spacing {spacing_t}, origin {origin_t}, direction of shape {direction_a.shape}"
        )
    if any(s <= 0 for s in spacing_t):
        raise ValueError(f"spacing must be positive, got {spacing_t}")
    return ArrayImage(array, spacing_t, origin_t, direction_a)


def _numbers(name: str, values: Any) -> np.ndarray:
    """``values`` as floats; strings and other non-numbers are refused, not parsed."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numbers, got {values!r}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {values!r}")
    return array.astype(float)


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


def load_image(value: ImageLike, name: str, *, mask: bool = False) -> Image:
    """Any supported image as an ``Image``; errors name the argument (``fixed_image`` ...).

    ``mask``: a mask may be boolean; an image may not (elastix would register 0/1 values).
    """
    if isinstance(value, str | Path):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: file not found: {path}")
        if path.suffix.lower() in (".mha", ".mhd"):
            try:
                g = check_mha(path)
            except (ValueError, FileNotFoundError) as e:
                raise type(e)(f"{name}: {e}") from None
            return Image("path", None, g.spacing, g.origin, g.direction, path)
        if path.name.lower().endswith((".nii", ".nii.gz")):
            try:
                check_nifti(path)  # ITK reads a truncated .nii.gz without a word
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
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
    _check_voxels(image, name, mask)
    return image


def _check_voxels(image: Image, name: str, mask: bool) -> None:
    array = image.array
    assert array is not None
    if array.ndim not in (2, 3, 4):
        raise ValueError(f"{name} is {array.ndim}D (array shape {array.shape}); elastix registers 2D, 3D or 4D images")
    if array.dtype == np.bool_ and not mask:
        raise TypeError(f"{name} has pixel type bool; give a binary image as uint8 or float (masks may be bool)")
    if array.dtype.kind not in "biuf" or not writable(array.dtype):
        raise TypeError(
            f"{name} has pixel type {array.dtype}; allowed: (u)int8/16/32/64, float32, float64"
            + (", bool" if mask else "")
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{name} contains NaN or infinite values ({bad} of {array.size} voxels)")
    if min(array.shape) < 4:
        hint = "; a last axis of 2 or 3 looks like vector components, and elastix registers scalar images"
        raise ValueError(
            f"{name} has size {tuple(reversed(array.shape))} (x first); every axis needs >= 4 voxels"
            + (hint if array.shape[-1] in (2, 3) else "")
        )


def check_pair(fixed: Image, moving: Image) -> None:
    if fixed.dimension and moving.dimension and fixed.dimension != moving.dimension:
        raise ValueError(
            f"fixed_image is {fixed.dimension}D but moving_image is {moving.dimension}D; "
            "elastix registers images of the same dimension"
        )


def check_mask(mask: Image, image: Image, name: str, image_name: str) -> None:
    """A mask must lie on its image's grid (size and geometry) and contain at least one voxel."""
    if mask.array is not None:
        if not mask.array.any():
            raise ValueError(f"{name} is empty: no voxel is inside the mask")
    if not (image.dimension and mask.dimension):
        return  # a file that only elastix reads: its grid is unknown here
    if mask.dimension != image.dimension:
        raise ValueError(f"{name} is {mask.dimension}D but {image_name} is {image.dimension}D")
    if mask.size != image.size:
        raise ValueError(f"{name} has size {mask.size} but {image_name} has size {image.size} (x first)")
    if not same_geometry(mask.spacing, mask.origin, mask.direction, image):
        raise ValueError(
            f"{name} lies on another grid than {image_name}: spacing {tuple(mask.spacing)} vs "
            f"{tuple(image.spacing)}, origin {tuple(mask.origin)} vs {tuple(image.origin)}, direction "
            f"{mask.direction.ravel().tolist()} vs {image.direction.ravel().tolist()}; give the mask in the image's "
            "type or as image_from_array(mask, spacing, origin, direction) with the image's geometry"
        )


def same_geometry(spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray, grid: Image) -> bool:
    """Whether the geometry equals ``grid``'s to 1e-6 relative (what a round trip through text keeps)."""
    scale = max(1.0, float(np.abs(grid.origin).max(initial=0)))
    return (
        np.allclose(spacing, grid.spacing, rtol=1e-6, atol=0)
        and np.allclose(origin, grid.origin, atol=1e-6 * scale)
        and np.allclose(direction, grid.direction, atol=1e-6)
    )


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
    if (
        grid is not None
        and grid.array is not None
        and tuple(int(v) for v in g.size) == grid.size
        and same_geometry(spacing, origin, direction, grid)
    ):
        spacing, origin, direction = grid.spacing, grid.origin, grid.direction
    if like.array is not None and not vector and array.dtype != like.array.dtype and like.array.dtype != np.bool_:
        array = _cast(array, like.array.dtype)
    if like.kind == "numpy":
        return array
    if like.kind == "array":
        return ArrayImage(array, tuple(spacing.tolist()), tuple(origin.tolist()), direction)
    if like.kind == "sitk":
        return to_sitk(array, spacing, origin, direction, vector=vector)
    return to_itk(array, spacing, origin, direction, vector=vector)


def to_sitk(array: np.ndarray, spacing: Any, origin: Any, direction: Any, *, vector: bool = False) -> Any:
    """A ``SimpleITK.Image`` of ``array`` (z, y, x[, components]) with this geometry (x first; direction
    (D, D), column a = axis a). ``vector``: the last array axis holds the pixel's components."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(array, isVector=vector)
    out.SetSpacing([float(v) for v in np.ravel(spacing)])
    out.SetOrigin([float(v) for v in np.ravel(origin)])
    out.SetDirection([float(v) for v in np.ravel(direction)])
    return out


def to_itk(array: np.ndarray, spacing: Any, origin: Any, direction: Any, *, vector: bool = False) -> Any:
    """An ``itk.Image`` of ``array`` with this geometry; the arguments are those of ``to_sitk``."""
    import itk

    out = itk.image_from_array(np.ascontiguousarray(array), is_vector=vector)
    out.SetSpacing([float(v) for v in np.ravel(spacing)])
    out.SetOrigin([float(v) for v in np.ravel(origin)])
    out.SetDirection(itk.matrix_from_array(np.ascontiguousarray(np.asarray(direction, dtype=float))))
    return out


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The result in the input's pixel type; integers rounded and clipped to the type's range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return array.astype(dtype)
