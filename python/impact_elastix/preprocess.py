"""Intensity preprocessing and reorientation that match each feature-extractor family.

A pretrained network only gives meaningful features on inputs like those it was trained on
(IMPACT README, "Preprocessing Recommendation"):

* ``ct``: clip to [-1024, 276] HU, then (x + 370) / 436.6 (TotalSegmentator CT models).
* ``mr``: zero mean, unit variance (over a mask when given) (TotalSegmentator MR models, M730-M733).
* ``imagenet``: rescale to [0, 1], then (x - 0.485) / 0.229 (SAM2.1, DINOv2).

TotalSegmentator networks were trained on images in nibabel's canonical orientation, RAS: voxel
axes x, y, z point to the patient's Right, Anterior and Superior. ``reorient`` permutes and flips
the voxel axes (no resampling) and rewrites spacing, origin and direction so that every voxel keeps
its world position. Orientation codes name, per voxel axis (x first), the anatomical direction in
which the index grows; ITK's identity direction is "LPS".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .images import ArrayImage, Image, load_image, to_itk, to_sitk
from .mha import index_to_world, read_mha, write_mha

CT_WINDOW = (-1024.0, 276.0)
CT_CENTRE, CT_SCALE = -370.0, 436.6
IMAGENET_MEAN, IMAGENET_STD = 0.485, 0.229


def normalize_ct(array: np.ndarray) -> np.ndarray:
    """CT in HU -> clip [-1024, 276], then (x + 370) / 436.6 (float32)."""
    clipped = np.clip(np.asarray(array, dtype=np.float32), *CT_WINDOW)
    return (clipped - CT_CENTRE) / np.float32(CT_SCALE)


def normalize_mr(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(x - mean) / std over ``mask`` (all voxels by default); float32."""
    values = np.asarray(array, dtype=np.float64)
    region = values if mask is None else values[np.asarray(mask) > 0]
    if region.size == 0:
        raise ValueError("mask: the mask is empty; MR normalisation needs at least one voxel")
    std = region.std()
    if not np.isfinite(std) or std == 0:
        raise ValueError(f"image: MR normalisation needs varying intensities, got std {std}")
    return ((values - region.mean()) / std).astype(np.float32)


def normalize_imagenet(array: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1], then (x - 0.485) / 0.229 (float32)."""
    values = np.asarray(array, dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        raise ValueError(f"image: ImageNet normalisation needs varying intensities, all voxels are {low}")
    return (((values - low) / (high - low) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


NORMALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "ct": normalize_ct,
    "mr": normalize_mr,
    "imagenet": normalize_imagenet,
}

_POSITIVE = "LPS"  # ITK world axes grow toward Left, Posterior, Superior
_NEGATIVE = "RAI"


def orientation_of(direction: np.ndarray) -> str:
    """The orientation code of a direction matrix (columns = voxel axes in LPS world coordinates)."""
    direction = np.asarray(direction, dtype=float)
    code = ""
    for axis in range(direction.shape[1]):
        world = int(np.argmax(np.abs(direction[:, axis])))
        code += (_POSITIVE if direction[world, axis] > 0 else _NEGATIVE)[world]
    return code


def _check_code(code: str, dimension: int) -> str:
    code = code.upper()
    worlds = sorted(_POSITIVE.find(c) if c in _POSITIVE else _NEGATIVE.find(c) for c in code)
    if dimension != 3 or len(code) != 3 or worlds != [0, 1, 2] or any(c not in _POSITIVE + _NEGATIVE for c in code):
        raise ValueError(
            f"orientation {code!r}: needs a 3D image and three letters, one of L/R, P/A, S/I each (e.g. RAS, LPS)"
        )
    return code


def reorient(
    array: np.ndarray, spacing: np.ndarray, origin: np.ndarray, direction: np.ndarray, orientation: str = "RAS"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Permutes/flips the voxel axes of ``array`` (z, y, x) to ``orientation``; every voxel keeps its world position."""
    dimension = len(spacing)
    target = _check_code(orientation, dimension)
    source = orientation_of(direction)
    if len(set(source.replace("R", "L").replace("A", "P").replace("I", "S"))) != dimension:
        raise ValueError(f"direction {np.asarray(direction).tolist()}: two voxel axes point along the same world axis")
    spacing, origin, direction = (np.asarray(v, dtype=float) for v in (spacing, origin, direction))
    xfirst = np.transpose(array, tuple(reversed(range(dimension))))
    world = [(_POSITIVE.find(c) if c in _POSITIVE else _NEGATIVE.find(c)) for c in source]
    perm, flips = [], []
    for letter in target:
        w = _POSITIVE.find(letter) if letter in _POSITIVE else _NEGATIVE.find(letter)
        axis = world.index(w)
        perm.append(axis)
        flips.append(source[axis] != letter)
    size = np.array(xfirst.shape)
    out = np.transpose(xfirst, perm)
    corner = np.zeros(dimension)  # old index of the new first voxel
    new_direction = np.empty_like(direction)
    for j, (axis, flip) in enumerate(zip(perm, flips, strict=True)):
        if flip:
            out = np.flip(out, j)
            corner[axis] = size[axis] - 1
        new_direction[:, j] = -direction[:, axis] if flip else direction[:, axis]
    new_origin = index_to_world(corner, origin, spacing, direction)
    out = np.ascontiguousarray(np.transpose(out, tuple(reversed(range(dimension)))))
    return out, spacing[perm], new_origin, new_direction


def preprocess(
    image: Any,
    modality: str,
    orientation: str | None = None,
    mask: Any = None,
) -> Any:
    """``image`` normalised for ``modality`` ("ct", "mr", "imagenet"; "none" keeps intensities) and, when
    ``orientation`` is given, reoriented; returned in the input's type (itk, SimpleITK, ArrayImage,
    NumPy; a path gives an ArrayImage). ``mask`` (same grid) restricts the MR statistics."""
    if modality not in (*NORMALIZERS, "none"):
        raise ValueError(f"modality {modality!r} is not one of {', '.join([*NORMALIZERS, 'none'])}")
    img = _as_array_image(image, "image")
    array = img.array.astype(np.float32)
    if modality == "mr":
        mask_array = None if mask is None else _as_array_image(mask, "mask", mask=True).array
        if mask_array is not None and mask_array.shape != array.shape:
            raise ValueError(f"mask: shape {mask_array.shape} differs from the image's {array.shape}")
        array = normalize_mr(array, mask_array)
    elif modality != "none":
        array = NORMALIZERS[modality](array)
    spacing, origin, direction = img.spacing, img.origin, img.direction
    if orientation is not None:
        array, spacing, origin, direction = reorient(array, spacing, origin, direction, orientation)
    return _like(img, array, spacing, origin, direction)


def _as_array_image(value: Any, name: str, *, mask: bool = False) -> Image:
    image = load_image(value, name, mask=mask)
    if image.kind != "path":
        return image
    path = Path(value)
    if path.suffix.lower() in (".mha", ".mhd"):
        array, g = read_mha(path)
        return Image("path", array, g.spacing, g.origin, g.direction, path)
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ValueError(f"{name}: {path.suffix} files need SimpleITK (pip install SimpleITK) or a .mha file") from None
    return _from_sitk(sitk.ReadImage(str(path)), name, path, mask)


def _from_sitk(value: Any, name: str, path: Path, mask: bool) -> Image:
    image = load_image(value, name, mask=mask)
    image.kind, image.path = "path", path
    return image


def _like(img: Image, array: np.ndarray, spacing: Any, origin: Any, direction: Any) -> Any:
    if img.kind == "numpy":
        return array
    if img.kind == "sitk":
        return to_sitk(array, spacing, origin, direction)
    if img.kind == "itk":
        return to_itk(array, spacing, origin, direction)
    return ArrayImage(array, tuple(map(float, spacing)), tuple(map(float, origin)), np.asarray(direction, dtype=float))


def preprocess_file(
    source: str | Path, destination: str | Path, modality: str, orientation: str | None = None, mask: str | None = None
) -> Path:
    """Reads ``source`` (.mha, or any format SimpleITK reads), preprocesses it, writes ``destination``."""
    result = preprocess(Path(source), modality, orientation, None if mask is None else Path(mask))
    destination = Path(destination)
    if destination.suffix.lower() in (".mha", ".mhd"):
        write_mha(destination, result.array, spacing=result.spacing, origin=result.origin, direction=result.direction)
        return destination
    import SimpleITK as sitk

    sitk.WriteImage(to_sitk(result.array, result.spacing, result.origin, result.direction), str(destination))
    return destination
