"""The Docker image's entry point: register what is in /Data, write everything to /Out.

Contract (the IMPACT Docker notes):

    /Data/FixedImage.mha|.nii.gz|.nii|.mhd|.nrrd     required
    /Data/MovingImage.<same choices>                 required
    /Data/ParameterMap.txt                           required (or ParameterMap.0.txt, .1.txt, ... run in order)
    /Data/Models/                                    the TorchScript models the map names
    /Data/Fixed_mask.<ext>, /Data/Moving_mask.<ext>  optional
    /Data/Fixed_landmarks.txt, /Data/Moving_landmarks.txt   optional (elastix point files: "index" or "point")

Out: elastix's transforms, result image and log, and with landmarks a TRE report (TRE.txt and
TRE.json: per-landmark and mean distances before and after). Model paths in the map may be absolute
(/Data/Models/...) or relative to /Data. Every missing or misnamed input is reported by name, with
what was found instead, before elastix starts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

from .executables import ElastixError, Terminated, run_elastix, run_transformix, terminate_as_exception
from .mha import index_to_world, read_geometry
from .parameter_object import read_parameter_file
from .points import read_points, read_transformix_points, tre, write_points

IMAGE_EXTENSIONS = (".mha", ".nii.gz", ".nii", ".mhd", ".nrrd")


class InputError(ValueError):
    """A missing, ambiguous or misnamed input in the data folder."""


def _stem_matches(path: Path, stem: str) -> bool:
    return any(path.name == stem + ext for ext in IMAGE_EXTENSIONS)


def find_image(data: Path, stem: str, required: bool) -> Path | None:
    """``data/<stem><ext>`` for one of IMAGE_EXTENSIONS; errors name near misses (case, separators)."""
    found = [p for p in sorted(data.iterdir()) if _stem_matches(p, stem)]
    if len(found) > 1:
        raise InputError(f"{data}: several files for {stem}: {', '.join(p.name for p in found)}; keep one")
    if found:
        return found[0]
    if not required:
        return None
    simple = stem.lower().replace("_", "")
    near = [p.name for p in sorted(data.iterdir()) if p.name.lower().replace("_", "").startswith(simple)]
    hint = f"; found {', '.join(near)} (names are case-sensitive)" if near else ""
    raise InputError(f"{data}: missing {stem} (one of {', '.join(stem + e for e in IMAGE_EXTENSIONS)}){hint}")


def find_parameter_maps(data: Path) -> list[Path]:
    single = data / "ParameterMap.txt"
    numbered = sorted(data.glob("ParameterMap.[0-9]*.txt"), key=lambda p: int(p.name.split(".")[1]))
    if single.is_file() and numbered:
        raise InputError(f"{data}: both ParameterMap.txt and {numbered[0].name}; use one or the numbered sequence")
    if single.is_file():
        return [single]
    if numbered:
        indices = [int(p.name.split(".")[1]) for p in numbered]
        if indices != list(range(len(numbered))):
            raise InputError(f"{data}: numbered parameter maps must be ParameterMap.0.txt, .1.txt, ... got {indices}")
        return numbered
    others = [p.name for p in sorted(data.glob("*.txt")) if "param" in p.name.lower()]
    hint = f"; found {', '.join(others)}" if others else ""
    raise InputError(f"{data}: missing ParameterMap.txt (or ParameterMap.0.txt, ParameterMap.1.txt, ...){hint}")


def check_models(maps: list[Path], data: Path) -> None:
    """Every model file a map names must exist (absolute, or relative to the data folder)."""
    for path in maps:
        parameters = read_parameter_file(path)
        for key, entries in parameters.items():
            if key.endswith("ModelsPath") or (key.startswith("Impact") and "ModelsPath" in key):
                for entry in entries:
                    for model in entry.split():
                        file = Path(model) if Path(model).is_absolute() else data / model
                        if not file.is_file():
                            models = data / "Models"
                            have = (
                                sorted(str(p.relative_to(data)) for p in models.rglob("*.pt"))
                                if models.is_dir()
                                else []
                            )
                            listing = ", ".join(have[:10]) or "no .pt files under Models/"
                            raise InputError(f"{path.name}: {key} names {model}, which does not exist ({listing})")


def _world_points(points_file: Path, image: Path) -> np.ndarray:
    """The landmarks of an elastix point file in world coordinates (``index`` files on ``image``'s grid)."""
    points, is_index = read_points(points_file)
    if not is_index:
        return points
    if image.suffix.lower() in (".mha", ".mhd"):
        return read_geometry(image).index_to_world(points)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(image))
    reader.ReadImageInformation()
    d = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(d, d)
    return index_to_world(points, np.array(reader.GetOrigin()), np.array(reader.GetSpacing()), direction)


def tre_report(transform: Path, data: Path, fixed: Path, moving: Path, out: Path) -> dict:
    """TRE of the landmarks before and after; writes TRE.txt and TRE.json to ``out``."""
    fixed_points = _world_points(data / "Fixed_landmarks.txt", fixed)
    moving_points = _world_points(data / "Moving_landmarks.txt", moving)
    if fixed_points.shape != moving_points.shape:
        raise InputError(
            f"Fixed_landmarks.txt has {fixed_points.shape[0]} points of dimension {fixed_points.shape[1]}, "
            f"Moving_landmarks.txt {moving_points.shape[0]} of dimension {moving_points.shape[1]}; they must pair up"
        )
    with tempfile.TemporaryDirectory() as tmp:
        points = write_points(Path(tmp) / "fixed_points.txt", fixed_points)
        run_transformix(transform, Path(tmp) / "tfx", points=points)
        mapped = read_transformix_points(Path(tmp) / "tfx" / "outputpoints.txt")
    before, after = tre(fixed_points, moving_points), tre(mapped, moving_points)
    report = {
        "landmarks": int(len(before)),
        "tre_before_mm": {"mean": float(before.mean()), "std": float(before.std()), "max": float(before.max())},
        "tre_after_mm": {"mean": float(after.mean()), "std": float(after.std()), "max": float(after.max())},
        "per_landmark_after_mm": [float(v) for v in after],
    }
    (out / "TRE.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"landmarks: {len(before)}",
        f"TRE before: {before.mean():.2f} +- {before.std():.2f} mm (max {before.max():.2f})",
        f"TRE after:  {after.mean():.2f} +- {after.std():.2f} mm (max {after.max():.2f})",
    ]
    (out / "TRE.txt").write_text("\n".join(lines) + "\n")
    return report


def run_data(data: Path, out: Path, threads: int | None = None, verbose: bool = False) -> Path:
    """Registers the contents of ``data`` into ``out``; returns the last transform parameter file."""
    data, out = Path(data).resolve(), Path(out).resolve()
    if not data.is_dir():
        raise InputError(f"data folder {data} does not exist (mount it: docker run -v ./Data:/Data ...)")
    fixed = find_image(data, "FixedImage", True)
    moving = find_image(data, "MovingImage", True)
    fixed_mask = find_image(data, "Fixed_mask", False)
    moving_mask = find_image(data, "Moving_mask", False)
    maps = find_parameter_maps(data)
    check_models(maps, data)
    landmarks = [(data / n).is_file() for n in ("Fixed_landmarks.txt", "Moving_landmarks.txt")]
    if any(landmarks) and not all(landmarks):
        missing = "Moving_landmarks.txt" if landmarks[0] else "Fixed_landmarks.txt"
        raise InputError(f"{data}: {missing} is missing; TRE needs both landmark files")
    out.mkdir(parents=True, exist_ok=True)
    print(f"registering {fixed.name} <- {moving.name} with {', '.join(m.name for m in maps)}", file=sys.stderr)
    transform = run_elastix(
        fixed,
        moving,
        maps,
        out,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
        threads=threads,
        verbose=verbose,
        cwd=data,
    )
    if all(landmarks):
        tre_report(transform, data, fixed, moving, out)
        print((out / "TRE.txt").read_text().strip(), file=sys.stderr)
    print(f"done: {out}", file=sys.stderr)
    return transform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="impact-elastix-run", description="Register /Data into /Out (Docker).")
    parser.add_argument("--data", default="/Data", help="input folder (default /Data)")
    parser.add_argument("--out", default="/Out", help="output folder (default /Out)")
    parser.add_argument("--threads", type=int, help="number of threads")
    parser.add_argument("-v", "--verbose", action="store_true", help="show elastix's console output")
    args = parser.parse_args(argv)
    try:
        # As PID 1 of a container, SIGTERM (docker stop) would otherwise be ignored until the SIGKILL.
        with terminate_as_exception():
            run_data(Path(args.data), Path(args.out), args.threads, args.verbose)
    except (InputError, ElastixError, ValueError, OSError) as error:
        print(f"impact-elastix-run: error: {error}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"impact-elastix-run: stopped by SIGTERM; no new result in {args.out}", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
