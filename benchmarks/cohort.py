"""A cohort made from the elastix lung CT pair, and the measurement behind the README's "Cohorts" table.

Pair i registers a crop of the baseline CT (the crop window moves with i) to the whole follow-up CT,
from the test data's affine start, with the 10 landmarks as world point files (TRE before = at the
affine start). ``python -m benchmarks.cohort`` runs the same cohort three ways: one pair at a time
(elastix with all cores), the local pool (one core per pair) and a 2-worker ``LocalCluster``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import time
from pathlib import Path

import numpy as np
from impact_elastix.batch import register_many
from impact_elastix.maps import bspline_map
from impact_elastix.mha import read_mha, write_mha
from impact_elastix.points import write_points

from examples.lung import lung_case


def write_cohort(directory: Path, pairs: int, size: tuple[int, int, int] = (64, 64, 48)) -> Path:
    """Writes the crops, landmark files and ``pairs.csv`` (relative paths) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    case = lung_case()
    array, g = read_mha(case.fixed)
    if not np.allclose(g.direction, np.eye(3)):
        raise ValueError(f"{case.fixed}: expected an axis-aligned image")
    write_points(directory / "fixed_landmarks.txt", case.fixed_landmarks)
    write_points(directory / "moving_landmarks.txt", case.moving_landmarks)
    rows = []
    for i in range(pairs):
        # Windows spread over the lungs (x, y, z voxel start), each inside the image.
        start = np.array([20 + 6 * (i % 4), 40 + 10 * (i // 4 % 3), 30 + 8 * (i % 3)])
        start = np.minimum(start, g.size - np.array(size))
        x, y, z = start
        crop = array[z : z + size[2], y : y + size[1], x : x + size[0]]
        name = f"fixed_{i:03d}.mha"
        write_mha(directory / name, crop, spacing=g.spacing, origin=g.index_to_world(start), direction=g.direction)
        rows.append([f"pair{i:03d}", name, str(case.moving), str(case.affine), "fixed_landmarks.txt",
                     "moving_landmarks.txt"])  # fmt: skip
    with (directory / "pairs.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "fixed", "moving", "initial_transform", "fixed_landmarks", "moving_landmarks"])
        writer.writerows(rows)
    return directory / "pairs.csv"


def cohort_map(iterations: int = 100, resolutions: int = 2, samples: int = 2000) -> dict:
    """B-spline (16 mm), ASGD, mean squares: cheap and deterministic for a fixed RandomSeed."""
    return bspline_map({"Metric": "AdvancedMeanSquares"}, resolutions=resolutions, iterations=iterations,
                       samples=samples)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the three runs; the table shows medians")
    parser.add_argument("--out", type=Path, default=Path("cohort-benchmark"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    shutil.rmtree(args.out, ignore_errors=True)
    manifest = write_cohort(args.out / "data", args.pairs)
    params = cohort_map(args.iterations)
    runs = [
        (f"1 pair at a time, elastix -threads {cores}", {"jobs": 1, "threads_per_job": cores}),
        (f"local pool: {cores} pairs at once, -threads 1", {"threads_per_job": 1}),
        ("LocalCluster, 2 worker processes, -threads 1", {"scheduler": "local:2", "threads_per_job": 1}),
    ]
    walls: dict[str, list[float]] = {label: [] for label, _ in runs}
    per_pair: dict[str, list[float]] = {label: [] for label, _ in runs}
    tre: dict[str, float] = {}
    load = [os.getloadavg()[0]]
    for round_ in range(args.repeats):  # rotating, so that a burst of other load hits every run alike
        for i, (label, options) in enumerate(runs):
            start = time.perf_counter()
            rows = register_many(manifest, params, args.out / f"r{round_}-{i}", progress=False, **options)
            walls[label].append(time.perf_counter() - start)
            if any(r["status"] != "done" for r in rows):
                raise RuntimeError(f"{label}: failed pairs: {[r['id'] for r in rows if r['status'] != 'done']}")
            per_pair[label] += [r["wall_s"] for r in rows]
            tre[label] = float(np.mean([r["tre_after_mm"] for r in rows]))
            print(f"{label}: {walls[label][-1]:.1f} s", flush=True)
        load.append(os.getloadavg()[0])
    base = float(np.median(walls[runs[0][0]]))
    print(f"\n{args.pairs} pairs, {cores} cores, B-spline {args.iterations} iterations x 2 levels, "
          f"median of {args.repeats}; 1-min load average {min(load):.1f}-{max(load):.1f}\n")  # fmt: skip
    print("| run | wall s | speed-up | mean s per pair | mean TRE after (mm) |\n|---|---|---|---|---|")
    for label, _ in runs:
        wall = float(np.median(walls[label]))
        print(f"| {label} | {wall:.1f} | {base / wall:.2f}x | {np.mean(per_pair[label]):.1f} | {tre[label]:.2f} |")


if __name__ == "__main__":
    main()
