"""Shared fixtures: the real elastix test data (its folder, models and images as engine inputs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from impact_elastix.mha import read_mha

from examples.testing_data import elastix_testing_data

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data() -> Path:
    return elastix_testing_data()


@pytest.fixture(scope="session")
def m730(data: Path) -> Path:
    return data / "M730_1_Layers.pt"


@pytest.fixture(scope="session")
def mind2d(data: Path) -> Path:
    return data / "R1D2_2D.pt"


def read_image(path: Path) -> tuple[torch.Tensor, dict]:
    """A MetaImage as a (*spatial) float32 tensor (z, y, x) and an engine geometry dict."""
    values, g = read_mha(path)
    geometry = {
        "size": [int(v) for v in g.size],
        "origin": [float(v) for v in g.origin],
        "spacing": [float(v) for v in g.spacing],
        "direction": [float(v) for v in g.direction.reshape(-1)],
    }
    return torch.from_numpy(values.astype(np.float32)), geometry


@pytest.fixture(scope="session")
def brain(data: Path) -> tuple[torch.Tensor, dict]:
    image, geometry = read_image(data / "2DMRI-T1_brain.mha")
    return (image - image.mean()) / image.std(), geometry


@pytest.fixture(scope="session")
def lung_crop(data: Path) -> tuple[torch.Tensor, dict, torch.Tensor, dict]:
    """A 48x48x32 crop of the lung pair (fixed, moving), z-scored, for fast engine tests."""
    out = []
    for name in ("3DCT_lung_baseline.mha", "3DCT_lung_followup.mha"):
        image, geometry = read_image(data / name)
        crop = image[40:72, 50:98, 30:78].contiguous()
        geometry = dict(geometry)
        start = (30, 50, 40)  # x, y, z voxel index of the crop
        geometry["origin"] = [o + s * i for o, s, i in zip(geometry["origin"], geometry["spacing"], start, strict=True)]
        geometry["size"] = [48, 48, 32]
        out += [(crop - crop.mean()) / crop.std(), geometry]
    return tuple(out)
