"""Image round trips: every input type comes back as itself, with its geometry bit for bit."""

from __future__ import annotations

from pathlib import Path

import itk
import numpy as np
import pytest
import SimpleITK as sitk
from impact_elastix.images import (
    check_mask,
    check_pair,
    image_from_array,
    load_image,
    result_like,
    to_itk,
    to_sitk,
    write_input,
)

SPACING = (0.1 + 0.2, 1.7, 2.3)
ORIGIN = (1 / 3, -2.5, 7.125)
THETA = 0.3
DIRECTION = np.array([[np.cos(THETA), -np.sin(THETA), 0], [np.sin(THETA), np.cos(THETA), 0], [0, 0, 1]])


def _array(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((5, 6, 7)) * 100).astype(dtype)


def _itk(array: np.ndarray) -> object:
    return to_itk(array, SPACING, ORIGIN, DIRECTION)


def _sitk(array: np.ndarray) -> sitk.Image:
    return to_sitk(array, SPACING, ORIGIN, DIRECTION)


def _geometry(image: object) -> tuple:
    if isinstance(image, sitk.Image):
        return image.GetSpacing(), image.GetOrigin(), image.GetDirection(), sitk.GetArrayFromImage(image)
    return (
        tuple(image.GetSpacing()),
        tuple(image.GetOrigin()),
        tuple(itk.array_from_matrix(image.GetDirection()).reshape(-1)),
        itk.array_from_image(image),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, np.float64])
@pytest.mark.parametrize("make", [_itk, _sitk], ids=["itk", "sitk"])
def test_itk_and_simpleitk_round_trip_exactly(tmp_path: Path, dtype: type, make: object) -> None:
    original = make(_array(dtype))
    image = load_image(original, "fixed_image")
    path = write_input(image, tmp_path / "in.mha")
    back = result_like(path, image, grid=image)
    assert type(back) is type(original)
    s0, o0, d0, a0 = _geometry(original)
    s1, o1, d1, a1 = _geometry(back)
    assert (s1, o1, d1) == (s0, o0, d0)
    assert a1.dtype == a0.dtype and np.array_equal(a1, a0)


def test_numpy_and_array_image_round_trip(tmp_path: Path) -> None:
    plain = _array(np.float32)
    image = load_image(plain, "moving_image")
    back = result_like(write_input(image, tmp_path / "a.mha"), image, grid=image)
    assert isinstance(back, np.ndarray) and np.array_equal(back, plain)

    with_geometry = image_from_array(plain, spacing=SPACING, origin=ORIGIN, direction=DIRECTION)
    image = load_image(with_geometry, "moving_image")
    back = result_like(write_input(image, tmp_path / "b.mha"), image, grid=image)
    assert back.spacing == SPACING and back.origin == ORIGIN and np.array_equal(back.direction, DIRECTION)
    assert np.array_equal(back.array, plain)
    # What elastix reads is what ITK reads.
    read = itk.imread(str(tmp_path / "b.mha"))
    assert tuple(read.GetSpacing()) == SPACING and tuple(read.GetOrigin()) == ORIGIN


def test_a_path_is_passed_through(tmp_path: Path, data: Path) -> None:
    image = load_image(data / "2DMRI-T1_brain.mha", "fixed_image")
    assert write_input(image, tmp_path / "x.mha") == data / "2DMRI-T1_brain.mha"
    assert image.dimension == 2 and image.size == (256, 256)


def test_bad_images_raise_clear_errors() -> None:
    with pytest.raises(FileNotFoundError, match="fixed_image: file not found: /nonexistent.mha"):
        load_image("/nonexistent.mha", "fixed_image")
    with pytest.raises(TypeError, match="moving_image has pixel type complex64"):
        load_image(np.zeros((8, 8), np.complex64), "moving_image")
    with pytest.raises(ValueError, match=r"fixed_image is 1D \(array shape \(8,\)\)"):
        load_image(np.zeros(8, np.float32), "fixed_image")
    nan = np.zeros((8, 8), np.float32)
    nan[2, 2] = np.nan
    with pytest.raises(ValueError, match="moving_image contains NaN or infinite values"):
        load_image(nan, "moving_image")
    vector = sitk.Image([8, 8], sitk.sitkVectorFloat32, 3)
    with pytest.raises(ValueError, match="fixed_image has 3 components per pixel"):
        load_image(vector, "fixed_image")
    with pytest.raises(TypeError, match="expected an itk.Image, a SimpleITK.Image, a file path or a NumPy array"):
        load_image([[1, 2], [3, 4]], "fixed_image")
    with pytest.raises(ValueError, match="fixed_image is 3D but moving_image is 2D"):
        check_pair(load_image(np.zeros((8, 8, 8)), "f"), load_image(np.zeros((8, 8)), "m"))


def test_masks_must_match_their_image_and_not_be_empty() -> None:
    image = load_image(np.zeros((8, 9, 10), np.float32), "fixed_image")
    with pytest.raises(ValueError, match="fixed_mask is empty: no voxel is inside the mask"):
        check_mask(load_image(np.zeros((8, 9, 10), np.uint8), "fixed_mask"), image, "fixed_mask", "fixed_image")
    with pytest.raises(ValueError, match=r"fixed_mask has size \(10, 9, 9\) but fixed_image has size \(10, 9, 8\)"):
        check_mask(load_image(np.ones((9, 9, 10), np.uint8), "fixed_mask"), image, "fixed_mask", "fixed_image")
