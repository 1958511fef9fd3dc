"""How IMPACT scales with image size: the lung CT pair at its native size and resampled to clinical size.

The clinical-size pair is made from the real one: both images resampled (trilinear) to 512x512x300
voxels over the same physical extent, so the landmarks (world coordinates) and the affine start stay
valid. Static mode runs at VoxelSize 1 mm there, Jacobian mode with M730's field of view. Reported:
wall time, peak RSS, landmark TRE, and the seconds per level our metric logs for the feature maps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from impact_elastix.mha import read_mha, write_mha
from impact_elastix.parameter_object import DEFAULT_RANDOM_SEED

from examples.lung import landmark_tre, lung_case

from .cases import Case, lung
from .contestants import ours

CLINICAL_SIZE = (512, 512, 300)  # x, y, z
_FEATURE_SECONDS = re.compile(r"IMPACT Static: features of model .* computed in ([\d.e+-]+) s")


def _resampled(path: Path, size: tuple[int, int, int], out: Path) -> Path:
    if out.exists():
        return out
    image, g = read_mha(path)
    extent = g.size * g.spacing  # voxel-edge extent, kept
    spacing = extent / np.array(size)
    origin = g.origin + g.direction @ ((spacing - g.spacing) / 2)  # same corners
    volume = torch.from_numpy(image.astype(np.float32))[None, None]
    resized = torch.nn.functional.interpolate(volume, size=size[::-1], mode="trilinear", align_corners=False)
    return write_mha(out, resized[0, 0].numpy(), spacing=spacing, origin=origin, direction=g.direction)


def clinical_lung(work: Path) -> Case:
    native = lung(work)
    work.mkdir(parents=True, exist_ok=True)
    fixed = _resampled(native.fixed, CLINICAL_SIZE, work / "clinical_fixed.mha")
    moving = _resampled(native.moving, CLINICAL_SIZE, work / "clinical_moving.mha")

    def evaluate(transform: Path | None) -> dict[str, float]:
        # Landmarks are in world coordinates; the lung masks live on the native grid, so no Dice here.
        return {"tre_mm": float(landmark_tre(lung_case(), transform or native.initial).mean())}

    return replace(native, name="lung CT pair at 512x512x300", fixed=fixed, moving=moving, evaluate=evaluate)


def scaling_rows(work: Path, levels: int, iters: int, samples: int, run: Callable[..., dict]) -> list[dict]:
    """Our Static (1 mm) and Jacobian M730 rows on the native and the clinical-size lung pair."""
    rows = []
    for case in (lung(work), clinical_lung(work / "clinical")):
        model = case.models["M730"]
        for mode, voxel in (("Static", 1.0), ("Jacobian", 1.5)):
            contestant = ours(replace(case, voxel=voxel), "M730", model, mode, levels)
            slug = "".join(ch if ch.isalnum() else "-" for ch in f"scaling-{case.name}-{mode}")
            row = run(case, contestant, work / slug, DEFAULT_RANDOM_SEED, levels, iters, samples, None)
            log = (work / slug / "elastix.log").read_text(errors="replace") if (work / slug).exists() else ""
            per_level = [float(s) for s in _FEATURE_SECONDS.findall(log)]
            row["voxel_mm"] = voxel
            row["feature_map_seconds"] = per_level
            rows.append(row)
    return rows


def scaling_table(rows: list[dict]) -> str:
    lines = [
        "| case | mode (VoxelSize) | wall s | peak RSS GB | TRE mm | feature maps, s per level |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = r["contestant"].split()[1]
        if "error" in r:
            lines.append(f"| {r['case']} | {mode} ({r['voxel_mm']:g} mm) | failed: {r['error']} | | | |")
            continue
        maps = ", ".join(f"{s:.1f}" for s in r["feature_map_seconds"]) or "-"
        lines.append(
            f"| {r['case']} | {mode} ({r['voxel_mm']:g} mm) | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | "
            f"{r['tre_mm']:.2f} | {maps} |"
        )
    return "\n".join(lines)
