"""impact-elastix: command-line entry point.

impact-elastix register -f F.mha -m M.mha -p Params.txt -o OUT   (or --preset ct-cbct --model M.pt)
impact-elastix transformix -tp TransformParameters.0.txt -o OUT [--in IMAGE] [--def all|POINTS]
impact-elastix models inspect MODEL.pt|NAME    (dimension, channels, outputs, measured field of view)
impact-elastix models mind R1D2 --dimension 2 -o MIND.pt
impact-elastix models fetch TS/M730_2_Layers   (into ~/.IMPACT/models)
impact-elastix preprocess IN.nii.gz OUT.mha --modality ct|mr|imagenet [--orientation RAS]
impact-elastix preset ct-cbct --model M.pt [-o Params.txt]
impact-elastix batch pairs.csv -p Params.txt -o OUT [--scheduler local:N | --cluster slurm ...]
impact-elastix bin-dir        (the folder to give SlicerElastix as its custom elastix location)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from . import __version__, bin_dir


class Progress:
    """One status line from elastix's console output: level, iteration, metric value, elapsed time."""

    def __init__(self, maps: list[dict[str, tuple[str, ...]]], stream: object = sys.stderr) -> None:
        self.stream = stream
        self.maps = maps
        self.stage = -1
        self.level = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.in_table = False
        self.shown = (-2, -1)

    def _total(self, key: str, default: int) -> int:
        m = self.maps[max(self.stage, 0)] if self.maps else {}
        values = m.get(key, (str(default),))
        try:
            return int(values[min(self.level, len(values) - 1)])
        except ValueError:
            return default

    def __call__(self, line: str) -> None:
        if line.startswith("Running elastix with parameter file"):
            self.stage += 1
        elif line.startswith("Resolution:"):
            self.level = int(line.split(":")[1])
            self.in_table = False
        elif line.startswith("1:ItNr"):
            self.in_table = True
        elif self.in_table and line[:1].isdigit():
            fields = line.split("\t")
            now = time.perf_counter()
            # At most 4 updates a second, but always the first iteration of a level.
            if now - self.last < 0.25 and (self.stage, self.level) == self.shown:
                return
            self.last, self.shown = now, (self.stage, self.level)
            stage = f"map {self.stage + 1}/{len(self.maps)} " if len(self.maps) > 1 else ""
            levels = self._total("NumberOfResolutions", 1)
            iterations = self._total("MaximumNumberOfIterations", 500)
            metric = fields[1] if len(fields) > 1 else "?"
            self.stream.write(  # type: ignore[attr-defined]
                f"\r{stage}level {self.level + 1}/{levels}  iteration {int(fields[0]) + 1}/{iterations}"
                f"  metric {metric:>12s}  {now - self.start:6.1f} s   "
            )
            self.stream.flush()  # type: ignore[attr-defined]
        elif line.startswith("Stopping condition"):
            self.in_table = False
            self.stream.write("\n")  # type: ignore[attr-defined]


def _register(args: argparse.Namespace) -> int:
    from .parameter_object import ParameterObject, read_parameter_file, write_parameter_file
    from .registration import elastix_registration_method

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.preset:
        from .presets import PRESETS

        if not args.model:
            raise SystemExit("--preset needs --model")
        extra = {"mind": args.mind} if args.preset == "mr-ct" and args.mind else {}
        maps = [PRESETS[args.preset](args.model, **extra)]
        path = write_parameter_file(maps[0], out / f"{args.preset}.txt")
        print(f"parameter map: {path}", file=sys.stderr)
    elif args.p:
        maps = [read_parameter_file(p) for p in args.p]
    else:
        raise SystemExit("give -p Params.txt (repeatable) or --preset NAME --model MODEL.pt")
    progress = None if args.verbose or args.quiet else Progress(maps)
    start = time.perf_counter()
    _, transform = elastix_registration_method(
        args.f,
        args.m,
        parameter_object=ParameterObject(maps),
        fixed_mask=args.fMask,
        moving_mask=args.mMask,
        initial_transform_parameter_file_name=args.t0,
        output_directory=out,
        log_to_console=args.verbose,
        log_to_file=True,
        number_of_threads=args.threads,
        on_output_line=progress,
    )
    if not args.quiet:
        print(
            f"done in {time.perf_counter() - start:.1f} s: {out}/TransformParameters.{len(maps) - 1}.txt, "
            f"{out}/result.{len(maps) - 1}.mha, {out}/elastix.log",
            file=sys.stderr,
        )
    return 0


def _transformix(args: argparse.Namespace) -> int:
    from .executables import run_transformix

    run_transformix(
        args.tp,
        args.out,
        image=getattr(args, "in"),
        points=getattr(args, "def"),
        jacobian=args.jac,
        jacobian_matrix=args.jacmat,
        threads=args.threads or None,
        verbose=args.verbose,
    )
    print(f"done: {args.out}", file=sys.stderr)
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import builtin_name, fetch, inspect

    path = builtin_name(args.path) or fetch(args.path, args.root)
    print(inspect(path, args.dimension, args.channels).table())
    return 0


def _mind(args: argparse.Namespace) -> int:
    from .models import export_mind, inspect

    path = export_mind(args.o, args.variant, args.dimension, args.ssc)
    print(inspect(path).table())
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from .models import fetch

    print(fetch(args.name, args.root))
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from .preprocess import preprocess_file

    out = preprocess_file(args.input, args.output, args.modality, args.orientation, args.mask)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _preset(args: argparse.Namespace) -> int:
    from .parameter_object import format_parameter_map, write_parameter_file
    from .presets import PRESETS

    extra = {"mind": args.mind} if args.name == "mr-ct" and args.mind else {}
    parameter_map = PRESETS[args.name](args.model, **extra)
    if args.o:
        write_parameter_file(parameter_map, args.o)
    else:
        sys.stdout.write(format_parameter_map(parameter_map))
    return 0


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _batch(args: argparse.Namespace) -> int:
    from .batch import ClusterOptions, WorkerError, register_many
    from .batch.engines import jobqueue_cluster

    cluster = None
    if args.cluster:
        cluster = ClusterOptions(args.cluster, args.queue, args.cores, args.memory, args.walltime, args.cluster_jobs)
    elif args.print_job_script:
        raise ValueError("--print-job-script needs --cluster slurm|pbs|sge")
    # `kill` (and a cluster's job cancellation) stops the batch like Ctrl-C: running elastix killed, summary written.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.print_job_script:
            with jobqueue_cluster(cluster) as hpc:
                print(hpc.job_script())
            return 0
        rows = register_many(
            args.manifest,
            args.p,
            args.out,
            threads_per_job=args.threads_per_job,
            jobs=args.jobs,
            scheduler=args.scheduler,
            cluster=cluster,
            retries=args.retries,
            memory_per_job=None if args.memory_per_job is None else int(args.memory_per_job * 2**30),
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        return 130
    except WorkerError as e:
        raise ValueError(str(e)) from None
    except ModuleNotFoundError as e:
        raise ValueError(f"{e.name} is missing: pip install 'impact-elastix[batch]' for Dask and dask-jobqueue") from e
    failed = [r["id"] for r in rows if r["status"] != "done"]
    print(f"{len(rows) - len(failed)} done, {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; "
          f"{args.out}/summary.csv, {args.out}/overview.html", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _add_batch(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "batch",
        help="register a cohort of pairs (resumable; local pool, Dask, SLURM/PBS/SGE)",
        description="Registers every row of a manifest CSV (id, fixed, moving; optional fixed_mask, moving_mask, "
        "initial_transform, fixed_landmarks, moving_landmarks) into OUT/<id>/, skipping pairs already done "
        "with the same inputs and maps; writes OUT/summary.csv, summary.json and overview.html.",
    )
    b.add_argument("manifest", help="CSV with one row per pair; relative paths are against its folder")
    b.add_argument(
        "-p", action="append", required=True, metavar="PARAMS", help="parameter file (repeat for a sequence)"
    )
    b.add_argument("-o", "--out", required=True, help="output directory")
    b.add_argument("--threads-per-job", type=int, default=1, metavar="N", help="elastix -threads per pair (default 1)")
    b.add_argument("--jobs", type=int, metavar="N", help="local pool: pairs at once (default: cores / threads per job)")
    b.add_argument("--retries", type=int, default=0, metavar="N", help="reruns of a failing pair (default 0)")
    b.add_argument(
        "--memory-per-job", type=float, metavar="GIB", help="GiB each pair declares, instead of the estimate"
    )
    b.add_argument(
        "--scheduler", metavar="ADDRESS|local:N", help="Dask scheduler address, or local:N for N local worker processes"
    )
    b.add_argument("--cluster", choices=("slurm", "pbs", "sge"), help="submit Dask workers with dask-jobqueue")
    b.add_argument("--queue", help="--cluster: queue / partition")
    b.add_argument("--cores", type=int, default=1, metavar="N", help="--cluster: cores per HPC job (default 1)")
    b.add_argument("--memory", default="4GB", help="--cluster: memory per HPC job (default 4GB)")
    b.add_argument("--walltime", default="01:00:00", help="--cluster: wall time per HPC job (default 01:00:00)")
    b.add_argument(
        "--cluster-jobs", type=int, default=1, metavar="N", help="--cluster: HPC jobs (workers) to start (default 1)"
    )
    b.add_argument("--print-job-script", action="store_true", help="--cluster: print the job script, submit nothing")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    b.set_defaults(run=_batch)


def build_parser() -> argparse.ArgumentParser:
    from .presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="impact-elastix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"impact-elastix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    reg = sub.add_parser(
        "register",
        help="register two images with elastix (IMPACT available)",
        description="Runs elastix -f -m -p -out with progress output; the results land in OUT.",
    )
    reg.add_argument("-f", required=True, help="fixed image")
    reg.add_argument("-m", required=True, help="moving image")
    reg.add_argument("-p", action="append", help="parameter file (repeat for a sequence of registrations)")
    reg.add_argument("-o", "--out", required=True, help="output directory")
    reg.add_argument("--fMask", help="fixed image mask")
    reg.add_argument("--mMask", help="moving image mask")
    reg.add_argument("--t0", help="initial transform parameter file")
    reg.add_argument("--threads", type=int, help="number of threads (elastix and torch)")
    reg.add_argument("--preset", choices=sorted(PRESETS), help="a recommended IMPACT set-up instead of -p")
    reg.add_argument("--model", help="TorchScript model for --preset")
    reg.add_argument("--mind", help="MIND model for --preset mr-ct (default: the built-in MIND/R1D2)")
    verbosity = reg.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="show elastix's full console output")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    reg.set_defaults(run=_register)

    tfx = sub.add_parser(
        "transformix",
        help="apply a transform (image, deformation field, Jacobians, points)",
        description="Runs transformix -tp -out with the given outputs.",
    )
    tfx.add_argument("-tp", required=True, help="transform parameter file")
    tfx.add_argument("-o", "--out", required=True, help="output directory")
    tfx.add_argument("--in", dest="in", help="image to warp")
    tfx.add_argument("--def", dest="def", help="'all' for the deformation field, or a point file")
    tfx.add_argument("--jac", help="'all' for the determinant of the spatial Jacobian")
    tfx.add_argument("--jacmat", help="'all' for the full spatial Jacobian")
    tfx.add_argument("--threads", type=int, help="number of threads")
    tfx.add_argument("-v", "--verbose", action="store_true", help="show transformix's console output")
    tfx.set_defaults(run=_transformix)

    models = sub.add_parser("models", help="feature-extractor tools")
    msub = models.add_subparsers(dest="models_command", required=True)
    ins = msub.add_parser("inspect", help="dimension, channels, outputs, strides and measured field of view")
    ins.add_argument("path", help="TorchScript model file, or a model-store name such as MIND/R1D2")
    ins.add_argument("--dimension", type=int, choices=(2, 3), help="model dimension (default: detected)")
    ins.add_argument("--channels", type=int, help="input channels (default: detected)")
    ins.add_argument("--root", help="model store folder (default: $IMPACT_MODELS_DIR or ~/.IMPACT/models)")
    ins.set_defaults(run=_models)
    mind = msub.add_parser("mind", help="write a MIND / MIND-SSC TorchScript model")
    mind.add_argument("variant", help="R<radius>D<dilation>: R1D1, R1D2, R2D1, R2D2, ...")
    mind.add_argument("--dimension", type=int, choices=(2, 3), default=3, help="2 or 3 (default 3)")
    mind.add_argument("--ssc", action="store_true", help="MIND-SSC (self-similarity context) instead of MIND")
    mind.add_argument("-o", required=True, help="output .pt file")
    mind.set_defaults(run=_mind)
    fet = msub.add_parser("fetch", help="download a model of the public IMPACT repository into the store")
    fet.add_argument("name", help="e.g. TS/M730_2_Layers, MIND/R1D2, SAM2.1/Tiny_2_Layers")
    fet.add_argument("--root", help="model store folder (default: $IMPACT_MODELS_DIR or ~/.IMPACT/models)")
    fet.set_defaults(run=_fetch)

    prep = sub.add_parser("preprocess", help="normalise (and reorient) an image for a model family")
    prep.add_argument("input", help="image file (.mha; NIfTI and others with SimpleITK installed)")
    prep.add_argument("output", help="output image file")
    prep.add_argument("--modality", required=True, choices=("ct", "mr", "imagenet", "none"), help="model family")
    prep.add_argument("--orientation", help="reorient the voxel axes, e.g. RAS (TotalSegmentator's canonical)")
    prep.add_argument("--mask", help="mask restricting the MR mean and standard deviation")
    prep.set_defaults(run=_preprocess)

    pre = sub.add_parser("preset", help="write a recommended IMPACT parameter map")
    pre.add_argument("name", choices=sorted(PRESETS))
    pre.add_argument("--model", required=True, help="TorchScript segmentation-network model")
    pre.add_argument("--mind", help="MIND model for mr-ct (default: the built-in MIND/R1D2)")
    pre.add_argument("-o", help="output file (default: standard output)")
    pre.set_defaults(run=_preset)

    _add_batch(sub)

    bd = sub.add_parser("bin-dir", help="print the folder holding elastix and transformix (for SlicerElastix)")
    bd.set_defaults(run=lambda _args: print(bin_dir()) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .executables import ElastixError, Terminated, terminate_as_exception

    args = build_parser().parse_args(argv)
    try:
        with terminate_as_exception():
            return int(args.run(args))
    except (ElastixError, ValueError, TypeError, OSError) as e:
        print(f"impact-elastix {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        # elastix is already stopped (executables.run); results are published only on success.
        cause, status = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else ("SIGTERM", 128 + signal.SIGTERM)
        where = f"; no new result in {args.out}" if getattr(args, "out", None) else ""
        print(f"\nimpact-elastix {args.command}: stopped by {cause}{where}", file=sys.stderr)
        return status


if __name__ == "__main__":
    raise SystemExit(main())
