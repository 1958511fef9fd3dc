"""Preprocessing per model family and reorientation that keeps every voxel's world position."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from impact_elastix.images import image_from_array
from impact_elastix.mha import Geometry, read_mha, write_mha
from impact_elastix.preprocess import (
    normalize_ct,
    normalize_imagenet,
    normalize_mr,
    orientation_of,
    preprocess,
    reorient,
)


def test_normalisations() -> None:
    hu = np.array([-3000.0, -1024.0, -370.0, 276.0, 2000.0])
    np.testing.assert_allclose(
        normalize_ct(hu), [(-1024 + 370) / 436.6, (-1024 + 370) / 436.6, 0, 646 / 436.6, 646 / 436.6], rtol=1e-6
    )
    rng = np.random.default_rng(0)
    mr = rng.normal(300, 40, size=(6, 7, 8))
    z = normalize_mr(mr)
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-5
    mask = np.zeros(mr.shape, bool)
    mask[2:4] = True
    zm = normalize_mr(mr, mask)
    assert abs(zm[mask].mean()) < 1e-5 and abs(zm[mask].std() - 1) < 1e-5
    with pytest.raises(ValueError, match="mask is empty"):
        normalize_mr(mr, np.zeros(mr.shape))
    net = normalize_imagenet(np.array([10.0, 20.0, 30.0]))
    np.testing.assert_allclose(net, [(0 - 0.485) / 0.229, (0.5 - 0.485) / 0.229, (1 - 0.485) / 0.229], rtol=1e-6)
    with pytest.raises(ValueError, match="modality 'pet'"):
        preprocess(np.zeros((5, 5, 5)), "pet")


@pytest.mark.parametrize("target", ["RAS", "LPS", "SAL", "IRP"])
def test_reorient_keeps_world_positions(target: str) -> None:
    rng = np.random.default_rng(1)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)  # (z, y, x)
    direction = np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]])  # an oblique acquisition: PIR
    spacing, origin = np.array([0.7, 1.1, 2.5]), np.array([-12.0, 30.5, 7.25])
    out, sp, org, dirn = reorient(array, spacing, origin, direction, target)
    assert orientation_of(direction) == "PIR" and orientation_of(dirn) == target
    before = Geometry(np.array(array.shape[::-1]), origin, spacing, direction)
    for index in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        w = before.index_to_world(np.array([index]))[0]
        new_index = np.linalg.solve(dirn * sp, w - org)
        assert np.allclose(new_index, np.rint(new_index), atol=1e-9)
        x, y, z = np.rint(new_index).astype(int)
        assert out[z, y, x] == array[index[2], index[1], index[0]]
    back = reorient(out, sp, org, dirn, "PIR")
    assert np.array_equal(back[0], array) and np.allclose(back[2], origin) and np.allclose(back[3], direction)
    with pytest.raises(ValueError, match="orientation 'RAR'"):
        reorient(array, spacing, origin, direction, "RAR")


def test_preprocess_keeps_the_input_type_and_the_cli_writes_files(tmp_path: Path) -> None:
    import SimpleITK as sitk

    hu = np.full((6, 6, 6), -1000, np.int16)
    hu[2:4] = 40
    image = image_from_array(hu, spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
    out = preprocess(image, "ct", "RAS")
    assert out.array.dtype == np.float32 and orientation_of(out.direction) == "RAS"
    s = sitk.GetImageFromArray(hu)
    assert isinstance(preprocess(s, "ct"), sitk.Image)
    write_mha(tmp_path / "ct.mha", hu, spacing=np.array([1.0, 1.0, 2.0]))
    sitk.WriteImage(s, str(tmp_path / "ct.nii.gz"))
    for name in ("ct.mha", "ct.nii.gz"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "impact_elastix.cli",
                "preprocess",
                str(tmp_path / name),
                str(tmp_path / f"out_{name}.mha"),
                "--modality",
                "ct",
                "--orientation",
                "RAS",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        array, g = read_mha(tmp_path / f"out_{name}.mha")
        assert orientation_of(g.direction) == "RAS"
        np.testing.assert_allclose(np.sort(array.ravel()), np.sort(normalize_ct(hu).ravel()))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "impact_elastix.cli",
            "preprocess",
            str(tmp_path / "none.mha"),
            str(tmp_path / "o.mha"),
            "--modality",
            "mr",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "file not found" in bad.stderr
