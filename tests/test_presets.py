"""Every map in ParameterMaps/ runs as it is (test models in Models/, fewer iterations), names only
parameters that a selected elastix component or the Impact metric reads, and the SlicerElastix
command sequence produces the files Slicer reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from impact_elastix import _core
from impact_elastix.executables import elastix_command, transformix_command
from impact_elastix.mha import read_mha, write_mha
from impact_elastix.models import export_mind
from impact_elastix.parameter_object import read_parameter_file, write_parameter_file
from torch import nn

from examples.testing_data import elastix_testing_data

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "ParameterMaps").glob("*.txt"))
COMPONENT_KEYS = (
    "Registration",
    "Metric",
    "Transform",
    "Optimizer",
    "Interpolator",
    "ResampleInterpolator",
    "Resampler",
    "ImageSampler",
    "FixedImagePyramid",
    "MovingImagePyramid",
)


@cache
def elastix_names() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """String literals of elastix's core, and of each component's folder by component name."""
    source = elastix_testing_data().parents[1]
    literal = re.compile(r'"([A-Za-z][A-Za-z0-9]*)"')

    def literals(folder: Path) -> set[str]:
        names: set[str] = set()
        for path in folder.rglob("*"):
            # Tests and the default-map builder name parameters without reading them.
            if (
                path.suffix in (".h", ".hxx", ".cxx")
                and "GTesting" not in path.parts
                and path.name != "elxParameterObject.cxx"
            ):
                names |= set(literal.findall(path.read_text(errors="replace")))
        return names

    core = literals(source / "Core") | literals(source / "Common")
    for helper in (source / "Components").glob("*.h"):  # shared by components, e.g. the pyramid schedules
        core |= set(literal.findall(helper.read_text(errors="replace")))
    components: dict[str, frozenset[str]] = {}
    for header in (source / "Components").rglob("elx*.h"):
        for name in re.findall(r'elxClassNameMacro\("([A-Za-z0-9]+)"\)', header.read_text(errors="replace")):
            components[name] = frozenset(literals(header.parent))
    return frozenset(core), components


def unknown_parameters(parameters: dict[str, tuple[str, ...]]) -> list[str]:
    """Names that neither elastix's core, nor a selected component, nor the Impact metric reads."""
    core, components = elastix_names()
    levels = int(parameters.get("NumberOfResolutions", ("1",))[0])
    known = set(core) | set(_core.known_parameter_names(levels))
    for key in COMPONENT_KEYS:
        for component in parameters.get(key, ()):
            if component not in components and component != "Impact":
                raise AssertionError(f"{key} {component!r} is not an elastix 5.3.1 component")
            known |= components.get(component, frozenset())
    # Pyramids read "<Fixed|Moving>ImagePyramid..." by prefixing their own side.
    sided = {side + name for side in ("Fixed", "Moving") for name in known if name.startswith("ImagePyramid")}
    return sorted(name for name in parameters if name not in known | sided)


def test_the_checker_catches_typos_and_misplaced_parameters() -> None:
    parameters = read_parameter_file(ROOT / "ParameterMaps" / "Affine_MI.txt")
    assert unknown_parameters(parameters) == []
    assert unknown_parameters({**parameters, "MaximumNumberOfIteration": ("5",)}) == ["MaximumNumberOfIteration"]
    # A B-spline setting with an affine transform is read by nobody.
    assert unknown_parameters({**parameters, "FinalGridSpacingInPhysicalUnits": ("16",)}) == [
        "FinalGridSpacingInPhysicalUnits"
    ]
    # With Impact instead of mutual information, the histogram setting is read by nobody either.
    impact = {**parameters, "PatchSizes": ("5*5*5",), "Metric": ("Impact",)}
    assert unknown_parameters(impact) == ["NumberOfHistogramBins", "PatchSizes"]


class SevenStages(nn.Module):
    """Stand-in with the interface of a 7-output TotalSegmentator export (random weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        widths = [1, 8, 8, 8, 8, 8, 8, 8]
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv3d(widths[k], widths[k + 1], 3, stride=1 if k == 0 else 2, padding=1), nn.LeakyReLU())
            for k in range(7)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """Models/ laid out as the presets expect, and a cropped lung pair with masks."""
    work = tmp_path_factory.mktemp("presets")
    models = work / "Models"
    (models / "TS").mkdir(parents=True)
    shutil.copy(data / "M730_1_Layers.pt", models / "TS" / "M730_1_Layers.pt")
    shutil.copy(data / "M730_1_Layers.pt", models / "TS" / "M258_1_Layers.pt")  # same interface as the CT model
    torch.jit.script(SevenStages()).save(str(models / "TS" / "M730_7_Layers.pt"))
    export_mind(str(models / "MIND" / "R1D2.pt"), "R1D2", 3)
    for name in ("baseline", "followup"):
        for suffix in ("", "_mask"):
            array, g = read_mha(data / f"3DCT_lung_{name}{suffix}.mha")
            start = np.array([40, 40, 30])  # x, y, z
            crop = array[start[2] : start[2] + 40, start[1] : start[1] + 64, start[0] : start[0] + 64]
            write_mha(
                work / f"{name}{suffix}.mha",
                crop,
                spacing=g.spacing,
                origin=g.index_to_world(start),
                direction=g.direction,
            )
    return work


def quick(parameters: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The same map with a few iterations and samples, so that every preset runs in seconds."""
    out = dict(parameters)
    out["MaximumNumberOfIterations"] = ("4",)
    out["NumberOfSpatialSamples"] = ("300",)
    if "NumberOfSamplesForExactGradient" in out:
        out["NumberOfSamplesForExactGradient"] = ("300",)
    return out


def elastix(workspace: Path, out: Path, *maps: Path, masks: bool = False) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    command = elastix_command(
        "baseline.mha",
        "followup.mha",
        maps,
        out,
        fixed_mask="baseline_mask.mha" if masks else None,
        moving_mask="followup_mask.mha" if masks else None,
    )
    done = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
    log = (out / "elastix.log").read_text() if (out / "elastix.log").exists() else done.stdout
    assert done.returncode == 0, log[-3000:]
    return done


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.name != "Affine_MI.txt"], ids=lambda p: p.stem)
def test_preset_runs_and_names_only_known_parameters(preset: Path, workspace: Path) -> None:
    parameters = read_parameter_file(preset)
    assert unknown_parameters(parameters) == [], preset.name
    assert preset.read_text().startswith("//"), "every preset starts with a comment saying when to use it"
    out = workspace / "out" / preset.stem
    out.mkdir(parents=True)
    quick_map = write_parameter_file(quick(parameters), out.parent / f"{preset.stem}.quick.txt")
    maps = [quick_map]
    if preset.name.startswith(("CT_CBCT", "Slicer_CT")):  # the affine + deformable sequence
        maps = [
            write_parameter_file(quick(read_parameter_file(PRESETS[0])), out.parent / "affine.quick.txt"),
            quick_map,
        ]
        assert PRESETS[0].name == "Affine_MI.txt"
    elastix(workspace, out, *maps, masks=True)
    last = len(maps) - 1
    assert (out / f"TransformParameters.{last}.txt").is_file()
    assert "IMPACT statistics" in (out / "elastix.log").read_text()
    if preset.name.startswith("Slicer_"):
        assert (out / f"TransformParameters.{last}-Composite.h5").is_file()


def test_slicer_elastix_command_sequence(workspace: Path) -> None:
    """What SlicerElastix runs with a custom toolbox location: elastix with masks, then transformix."""
    import itk

    preset = ROOT / "ParameterMaps" / "Slicer_CT_CBCT_Jacobian.txt"
    out = workspace / "slicer"
    elastix(workspace, out, write_parameter_file(quick(read_parameter_file(preset)), workspace / "s.txt"), masks=True)
    composite = out / "TransformParameters.0-Composite.h5"
    assert composite.is_file() and (out / "result.0.mha").is_file()
    resampled = workspace / "slicer-resample"
    resampled.mkdir()
    command = transformix_command(out / "TransformParameters.0.txt", resampled, image="followup.mha", points="all")
    done = subprocess.run(command, cwd=workspace, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    field, g = read_mha(resampled / "deformationField.mha")
    assert (resampled / "result.mha").is_file() and field.shape == (40, 64, 64, 3)
    # Slicer reads the .h5 with ITK: the transform it gets must be the one transformix applies.
    transform = itk.transformread(str(composite))[0]
    for index in ([5, 7, 3], [40, 30, 20], [60, 10, 35]):
        x = g.index_to_world(np.array([index]))[0]
        y = np.array(transform.TransformPoint([float(v) for v in x]))
        np.testing.assert_allclose(y - x, field[index[2], index[1], index[0]], atol=1e-3)
