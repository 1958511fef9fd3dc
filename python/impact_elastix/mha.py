"""The geometry in a MetaImage (.mha/.mhd) header, read without ITK."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Geometry:
    size: np.ndarray  # (D,) voxels, x first
    origin: np.ndarray  # (D,) mm
    spacing: np.ndarray  # (D,) mm
    direction: np.ndarray  # (D, D)

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates (N, D) of voxel indices (N, D)."""
        return self.origin + (np.asarray(index, dtype=float) * self.spacing) @ self.direction.T


def read_geometry(path: str | Path) -> Geometry:
    fields: dict[str, str] = {}
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("latin-1").strip()
            if "=" not in line:
                break
            key, value = (s.strip() for s in line.split("=", 1))
            fields[key] = value
            if key == "ElementDataFile":
                break
    dim = int(fields["NDims"])
    size = np.array([int(v) for v in fields["DimSize"].split()])
    origin = np.array([float(v) for v in fields.get("Offset", fields.get("Origin", "0 " * dim)).split()])
    spacing = np.array([float(v) for v in fields.get("ElementSpacing", "1 " * dim).split()])
    matrix = fields.get("TransformMatrix")
    # MetaImage stores the direction column by column (as ITK writes it).
    direction = np.eye(dim) if matrix is None else np.array([float(v) for v in matrix.split()]).reshape(dim, dim).T
    return Geometry(size, origin, spacing, direction)
