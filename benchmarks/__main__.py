"""python -m benchmarks: every contestant on every case, one table, one JSON file.

Each contestant runs the same B-spline map (ASGD, random coordinates) apart from its metric block,
as a fresh elastix process; wall time and that process's peak RSS are measured. For our IMPACT the
metric logs its own work (patches through the model, seconds), which gives the achieved FLOP rate
against this machine's float32 matrix-multiply rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from impact_elastix.executables import elastix_command
from impact_elastix.maps import bspline_map
from impact_elastix.parameter_object import DEFAULT_RANDOM_SEED, write_parameter_file

from .cases import CASES, Case
from .contestants import Contestant, contestants
from .measure import gemm_rate, impact_statistics, iterations, model_flops, run_measured
from .scaling import scaling_rows, scaling_table

ROOT = Path(__file__).resolve().parents[1]


def _reference_prefix(build: bool) -> Path | None:
    args = ["bash", str(ROOT / "scripts" / "deps.sh"), "--reference"]
    if not build:
        # Only look: the build takes about 20 minutes.
        key = subprocess.run(args[:2] + ["--sdk-path"], capture_output=True, text=True).stdout.strip()
        cache = Path(key).parents[1] / "reference"
        found = sorted(cache.glob("elastix-*-impact_*/.done")) if cache.exists() else []
        return found[-1].parent if found else None
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(args, capture_output=False, stdout=subprocess.PIPE, text=True, env=env, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _run(
    case: Case, c: Contestant, work: Path, seed: int, levels: int, iters: int, samples: int, exact: int | None
) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    params = bspline_map(c.metric, resolutions=levels, iterations=iters, samples=samples) | case.map
    params["RandomSeed"] = seed
    if exact is None:
        params.pop("NumberOfSamplesForExactGradient", None)
    else:
        params["NumberOfSamplesForExactGradient"] = exact
    if case.dimension == 2:
        params["FinalGridSpacingInPhysicalUnits"] = 16
    path = write_parameter_file(params, work / "params.txt")
    cmd = elastix_command(
        case.fixed,
        case.moving,
        [path],
        work,
        initial_transform=case.initial,
        threads=os.cpu_count() or 1,
        executable=c.bin_dir / "elastix",
    )
    row: dict = {"case": case.name, "contestant": c.name, "seed": seed, "versus": c.versus}
    try:
        run = run_measured(cmd, work / "elastix.log", c.env)
    except RuntimeError as e:
        lines = str(e).splitlines()
        row["error"] = next((ln for ln in lines if "Description:" in ln or "ERROR" in ln), lines[-1])[:200]
        return row
    its = iterations(run.log)
    row |= {
        "seconds": run.seconds,
        "peak_rss_gb": run.peak_rss_gb,
        "iterations": its,
        "seconds_per_iteration": run.seconds / max(its, 1),
    }
    row |= case.evaluate(work / "TransformParameters.0.txt")
    stats = impact_statistics(run.log)
    if stats and c.model is not None and c.patch is not None:
        try:
            forward, backward = model_flops(c.model, c.patch)
        except (RuntimeError, ValueError) as error:  # a model torch cannot count: no work column
            print(f"model work of {c.model} not counted: {error}", file=sys.stderr)
            forward = backward = float("nan")
        row["model_gflop"] = (stats["forward"] * forward + stats["backward"] * backward) / 1e9
        row["metric_seconds"] = stats["metric_seconds"]
        row["evaluations"] = stats["evaluations"]
    return row


def _table(rows: list[dict], gemm: float) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["contestant"]), []).append(r)
    lines = []
    current = None
    for (case, name), runs in groups.items():
        if case != current:
            current = case
            start = next((r for r in rows if r["case"] == case and r["contestant"] == "start"), None)
            lines += [
                "",
                f"## {case}"
                + (f"  (start: {_accuracy(start)})" if start else "")
                + (f"  ({start['schedule']})" if start and start.get("schedule") else ""),
                "",
                "| contestant | wall s | s/iter | peak RSS GB | accuracy | vs reference | model work |",
                "|---|---|---|---|---|---|---|",
            ]
        if name == "start":
            continue
        ok = [r for r in runs if "error" not in r]
        if not ok:
            lines.append(f"| {name} | failed: {runs[0]['error']} | | | | | |")
            continue
        med = {k: statistics.median(r[k] for r in ok) for k in ok[0] if isinstance(ok[0][k], float | int)}
        versus = ""
        ref_name = ok[0].get("versus")
        ref = [r for r in groups.get((case, ref_name), []) if "error" not in r] if ref_name else []
        if ref:
            ref_s = statistics.median(r["seconds"] for r in ref)
            versus = f"{ref_s / med['seconds']:.1f}x faster"
        work = ""
        if "model_gflop" in med:
            gflop, metric_s = med["model_gflop"], med["metric_seconds"]
            work = f"{gflop:.0f} GFLOP: floor {gflop / gemm:.1f} s; in metric {metric_s:.1f} s"
            work += f" ({gflop / metric_s:.0f} GFLOP/s)"
        lines.append(
            f"| {name} | {med['seconds']:.1f} | {med['seconds_per_iteration']:.2f} | "
            f"{med['peak_rss_gb']:.2f} | {_accuracy(ok[0] | med)} | {versus} | {work} |"
        )
    return "\n".join(lines)


def _accuracy(r: dict) -> str:
    parts = []
    if "tre_mm" in r:
        parts.append(f"TRE {r['tre_mm']:.2f} mm")
    if "lung_dice" in r:
        parts.append(f"Dice {r['lung_dice']:.3f}")
    if "field_error_mm" in r:
        parts.append(f"field error {r['field_error_mm']:.2f} mm")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=sorted(CASES),
        help="default: every case whose data is here (BrainWeb needs IMPACT_BRAINWEB or ../shared/data/brainweb)",
    )
    parser.add_argument("--contestants", help="only contestants whose name contains this text")
    parser.add_argument("--seeds", type=int, default=1, help="RandomSeed values per contestant (median reported)")
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument(
        "--exact-gradient-samples",
        type=int,
        default=None,
        help="NumberOfSamplesForExactGradient for every contestant (default: elastix's own, 100000)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip elastix 5.3.1's own Impact")
    parser.add_argument("--build-reference", action="store_true", help="build the reference first if missing")
    parser.add_argument(
        "--scaling", action="store_true", help="only the size table: our M730 on the native and a 512x512x300 lung pair"
    )
    parser.add_argument("--work", type=Path, default=Path("benchmark-work"))
    parser.add_argument("--json", type=Path, default=Path("benchmark-results.json"))
    args = parser.parse_args(argv)
    if args.scaling:
        rows = scaling_rows(args.work, args.levels, args.iterations, args.samples, _run)
        print(scaling_table(rows))
        args.json.write_text(json.dumps({"scaling": rows}, indent=1))
        return 0

    reference = None if args.no_reference else _reference_prefix(args.build_reference)
    if reference is None and not args.no_reference:
        print(
            "elastix 5.3.1's own Impact is not built: run `bash scripts/deps.sh --reference` "
            "(or pass --build-reference / --no-reference)",
            file=sys.stderr,
        )
        return 2
    gemm = gemm_rate()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"machine: {machine}; float32 GEMM {gemm:.0f} GFLOP/s", file=sys.stderr)
    rows: list[dict] = []
    for case_name in args.cases or list(CASES):
        try:
            case = CASES[case_name](args.work)
        except FileNotFoundError as missing:
            if args.cases:  # asked for by name: its data must be there
                print(f"{case_name}: {missing}", file=sys.stderr)
                return 2
            print(f"skipping case {case_name}: {missing}", file=sys.stderr)
            continue
        levels, iters = case.levels or args.levels, case.iterations or args.iterations
        own = f"its own map: {levels} levels x {iters} iterations" if case.map or case.levels else ""
        rows.append({"case": case.name, "contestant": "start", "seed": 0, "schedule": own} | case.evaluate(None))
        for c in contestants(case, reference, levels):
            if args.contestants and args.contestants not in c.name:
                continue
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                slug = "".join(ch if ch.isalnum() else "-" for ch in f"{case_name}-{c.name}-{seed}")
                row = _run(
                    case,
                    c,
                    args.work / slug,
                    DEFAULT_RANDOM_SEED + seed,
                    levels,
                    iters,
                    args.samples,
                    args.exact_gradient_samples,
                )
                rows.append(row)
                args.json.write_text(json.dumps({"machine": machine, "partial": True, "rows": rows}, indent=1))
                status = row.get("error") or _accuracy(row)
                print(
                    f"[{time.perf_counter() - t0:6.1f} s] {case.name} | {c.name} | seed {seed}: {status}",
                    file=sys.stderr,
                )
    settings = (
        f"B-spline, {args.levels} levels x {args.iterations} iterations, {args.samples} samples, "
        f"NumberOfSamplesForExactGradient {args.exact_gradient_samples or 'elastix default (100000)'}, "
        f"median of {args.seeds} seed(s)"
    )
    print(f"# IMPACT benchmarks\n\nMachine: {machine}; float32 GEMM {gemm:.0f} GFLOP/s. {settings}.")
    print(_table(rows, gemm))
    args.json.write_text(
        json.dumps({"machine": machine, "gemm_gflops": gemm, "settings": settings, "rows": rows}, indent=1)
    )
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
