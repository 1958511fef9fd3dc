"""elastix parameter maps and ``ParameterObject``, with the methods of ``itk.ParameterObject``.

A parameter map is ``{name: (value, ...)}`` with string values, as elastix and itk-elastix hold it.
Functions here also accept plain dicts with Python values (``{"MaximumNumberOfIterations": 200}``)
and ``itk.ParameterObject`` instances.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# elastix's RandomSeed in every map this package writes (and the component's default): reproducible runs.
DEFAULT_RANDOM_SEED = 121212

Scalar = str | int | float | bool
ParameterMap = dict[str, tuple[str, ...]]
MapLike = Mapping[str, Scalar | Sequence[Scalar]]

_ENTRY = re.compile(r"^\(\s*([A-Za-z_][\w.]*)\s*(.*)\)$")
_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parameter_value(value: Scalar) -> str:
    """One value as elastix text: ``True`` -> ``"true"``, numbers as Python writes them.

    Only strings, bools and real numbers (NumPy's too) are values; anything else (None, a dict, a
    nested list) would reach elastix as its ``str()`` and is refused.
    """
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"parameter value {value!r} ({type(value).__name__}) is not a string, bool or number")
    if not math.isfinite(value):
        raise ValueError(f"parameter value {value} is not finite")
    return str(value.item() if isinstance(value, np.generic) else value)


def size_text(values: Sequence[float]) -> str:
    """Per-axis values (x first) as one value in the IMPACT README's spelling of ``PatchSize`` and
    ``VoxelSize``: ``(5, 5, 5)`` -> ``"5*5*5"``, ``(1.5, 3)`` -> ``"1.5*3"``."""
    return "*".join(f"{v:g}" for v in values)


def to_parameter_map(values: MapLike) -> ParameterMap:
    """A dict of Python values (scalars or sequences of them) as an elastix parameter map."""
    out: ParameterMap = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"parameter names must be non-empty strings, got {name!r}")
        items = value if isinstance(value, list | tuple) else [value]
        try:
            out[name] = tuple(parameter_value(v) for v in items)  # type: ignore[arg-type]
        except (TypeError, ValueError) as e:
            raise type(e)(f"parameter {name}: {e}") from None
    return out


def parse_parameter_text(text: str, source: str = "<text>") -> ParameterMap:
    """Parses elastix's parameter file syntax: ``(Name value ...)`` lines, ``//`` comments."""
    out: ParameterMap = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("//", 1)[0].strip() if '"' not in raw else _strip_comment(raw)
        if not line:
            continue
        match = _ENTRY.match(line)
        if not match:
            raise ValueError(f"{source}, line {number}: expected '(Name value ...)', got {raw.strip()[:60]!r}")
        name, rest = match.groups()
        values = tuple(q if q or not u else u for q, u in _TOKEN.findall(rest))
        if not values:
            raise ValueError(f"{source}, line {number}: parameter {name} has no value")
        out[name] = values
    return out


def _strip_comment(line: str) -> str:
    """Removes a ``//`` comment that is not inside quotes."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif not quoted and line.startswith("//", i):
            return line[:i].strip()
    return line.strip()


def format_parameter_map(parameter_map: MapLike) -> str:
    """elastix text: numbers unquoted, everything else quoted (as elastix writes its own files)."""
    lines = []
    for name, values in to_parameter_map(parameter_map).items():
        text = " ".join(v if _NUMBER.match(v) else f'"{v}"' for v in values)
        lines.append(f"({name} {text})")
    return "\n".join(lines) + "\n"


def read_parameter_file(path: str | Path) -> ParameterMap:
    """One elastix parameter file as a map; FileNotFoundError or ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    return parse_parameter_text(path.read_text(errors="replace"), str(path))


def write_parameter_file(parameter_map: MapLike, path: str | Path) -> Path:
    """Writes one map as an elastix parameter file; returns ``path``. The argument order is that of
    ``itk.ParameterObject.WriteParameterFile(map, file)``."""
    path = Path(path)
    path.write_text(format_parameter_map(parameter_map))
    return path


def _as_map(value: Any) -> ParameterMap:
    """A parameter map from a dict, or from the map type that itk.ParameterObject returns."""
    if isinstance(value, Mapping):
        return to_parameter_map(value)
    if hasattr(value, "items") and hasattr(value, "keys"):  # itk's swig mapstringvectorstring
        return {str(k): tuple(str(v) for v in vs) for k, vs in value.items()}
    raise TypeError(f"expected a parameter map (dict of name -> values), got {type(value).__name__}")


class ParameterObject:
    """A list of elastix parameter maps, applied in sequence (for example affine, then B-spline).

    The method names and overloads are those of ``itk.ParameterObject`` (itk-elastix 0.25), so
    code written for itk-elastix runs unchanged; maps are plain ``dict[str, tuple[str, ...]]``.
    """

    def __init__(self, maps: Iterable[MapLike] | None = None) -> None:
        self._maps: list[ParameterMap] = [_as_map(m) for m in maps or []]

    @classmethod
    def New(cls) -> ParameterObject:  # noqa: N802 (itk naming)
        return cls()

    @classmethod
    def from_any(cls, value: Any, name: str = "parameter_object") -> ParameterObject:
        """Ours, an ``itk.ParameterObject``, a dict, a list of dicts, or parameter file path(s);
        errors name the argument ``name``."""
        try:
            po = cls._from_any(value)
        except (TypeError, ValueError, FileNotFoundError) as e:
            raise type(e)(f"{name}: {e}") from None
        if po is None:
            raise TypeError(
                f"{name} must be an impact_elastix.ParameterObject, an itk.ParameterObject, a dict, "
                f"a list of dicts, or parameter file path(s); got {type(value).__name__}"
            )
        return po

    @classmethod
    def _from_any(cls, value: Any) -> ParameterObject | None:
        if isinstance(value, ParameterObject):
            return cls(value._maps)
        if hasattr(value, "GetNumberOfParameterMaps") and hasattr(value, "GetParameterMap"):
            return cls(value.GetParameterMap(i) for i in range(value.GetNumberOfParameterMaps()))
        if isinstance(value, str | Path):
            return cls([read_parameter_file(value)])
        if isinstance(value, Mapping):
            return cls([value])
        if isinstance(value, list | tuple) and value and all(isinstance(v, str | Path) for v in value):
            return cls(read_parameter_file(v) for v in value)
        if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
            return cls(value)
        return None

    def to_itk(self) -> Any:
        """The same maps as an ``itk.ParameterObject`` (needs the itk-elastix package)."""
        import itk

        out = itk.ParameterObject.New()
        for m in self._maps:
            out.AddParameterMap(m)
        return out

    # --- itk.ParameterObject methods -------------------------------------------------------------
    def GetNumberOfParameterMaps(self) -> int:  # noqa: N802
        return len(self._maps)

    def GetParameterMap(self, index: int) -> ParameterMap:  # noqa: N802
        return dict(self._maps[self._check(index)])

    def GetParameterMaps(self) -> list[ParameterMap]:  # noqa: N802
        return [dict(m) for m in self._maps]

    def AddParameterMap(self, parameter_map: MapLike) -> None:  # noqa: N802
        self._maps.append(_as_map(parameter_map))

    def SetParameterMap(self, index_or_map: int | MapLike, parameter_map: MapLike | None = None) -> None:  # noqa: N802
        """``SetParameterMap(map)`` replaces all maps by one; ``SetParameterMap(index, map)`` one map."""
        if parameter_map is None:
            self._maps = [_as_map(index_or_map)]
        else:
            self._maps[self._check(index_or_map)] = _as_map(parameter_map)  # type: ignore[arg-type]

    def SetParameterMaps(self, maps: Iterable[MapLike]) -> None:  # noqa: N802
        self._maps = [_as_map(m) for m in maps]

    def SetParameter(self, *args: Any) -> None:  # noqa: N802
        """``SetParameter(key, value)`` in every map, or ``SetParameter(index, key, value)`` in one."""
        if len(args) == 2:
            indices, (key, value) = range(len(self._maps)), args
        elif len(args) == 3:
            indices, key, value = [self._check(args[0])], args[1], args[2]
        else:
            raise TypeError("SetParameter(key, value) or SetParameter(index, key, value)")
        for i in indices:
            self._maps[i].update(to_parameter_map({key: value}))

    def GetParameter(self, index: int, key: str) -> tuple[str, ...]:  # noqa: N802
        m = self._maps[self._check(index)]
        if key not in m:
            raise KeyError(f"parameter map {index} has no parameter {key!r}")
        return m[key]

    def HasParameter(self, index: int, key: str) -> bool:  # noqa: N802
        return key in self._maps[self._check(index)]

    def RemoveParameter(self, *args: Any) -> None:  # noqa: N802
        """``RemoveParameter(key)`` from every map, or ``RemoveParameter(index, key)`` from one."""
        if len(args) == 1:
            indices, key = range(len(self._maps)), args[0]
        elif len(args) == 2:
            indices, key = [self._check(args[0])], args[1]
        else:
            raise TypeError("RemoveParameter(key) or RemoveParameter(index, key)")
        for i in indices:
            self._maps[i].pop(key, None)

    def ReadParameterFile(self, file_names: str | Path | Sequence[str | Path]) -> None:  # noqa: N802
        """Replaces the maps by those read from one file or a list of files."""
        names = [file_names] if isinstance(file_names, str | Path) else list(file_names)
        self._maps = [read_parameter_file(n) for n in names]

    def AddParameterFile(self, file_name: str | Path) -> None:  # noqa: N802
        self._maps.append(read_parameter_file(file_name))

    def WriteParameterFile(self, *args: Any) -> None:  # noqa: N802
        """``WriteParameterFile(map, file)``, or ``WriteParameterFile(file)`` for a single-map object."""
        if len(args) == 2:
            write_parameter_file(_as_map(args[0]), args[1])
        elif len(args) == 1:
            if len(self._maps) != 1:
                raise ValueError(
                    f"WriteParameterFile(file) needs exactly one map, this object has {len(self._maps)}; "
                    "use WriteParameterFiles(file_names)"
                )
            write_parameter_file(self._maps[0], args[0])
        else:
            raise TypeError("WriteParameterFile(map, file) or WriteParameterFile(file)")

    def WriteParameterFiles(self, file_names: Sequence[str | Path]) -> None:  # noqa: N802
        if len(file_names) != len(self._maps):
            raise ValueError(f"{len(file_names)} file names for {len(self._maps)} parameter maps")
        for m, name in zip(self._maps, file_names, strict=True):
            write_parameter_file(m, name)

    @staticmethod
    def GetDefaultParameterMap(  # noqa: N802
        transform_name: str, number_of_resolutions: int = 4, final_grid_spacing_in_physical_units: float = 10.0
    ) -> ParameterMap:
        """elastix's default map for "translation", "rigid", "affine", "bspline", "spline" or "groupwise"."""
        return default_parameter_map(transform_name, number_of_resolutions, final_grid_spacing_in_physical_units)

    # --- Python conveniences ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._maps)

    def __getitem__(self, index: int) -> ParameterMap:
        return self.GetParameterMap(index)

    def __iter__(self) -> Any:
        return iter(self.GetParameterMaps())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParameterObject) and self._maps == other._maps

    def __repr__(self) -> str:
        return "ParameterObject(\n" + "\n".join(format_parameter_map(m) for m in self._maps) + ")"

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self._maps):
            raise IndexError(f"parameter map index {index} out of range: the object has {len(self._maps)} map(s)")
        return index


_TRANSFORMS = {
    "translation": "TranslationTransform",
    "rigid": "EulerTransform",
    "affine": "AffineTransform",
    "bspline": "BSplineTransform",
    "spline": "SplineKernelTransform",
    "groupwise": "BSplineStackTransform",
}


def default_parameter_map(
    transform_name: str, number_of_resolutions: int = 4, final_grid_spacing_in_physical_units: float = 10.0
) -> ParameterMap:
    """The same maps as elastix's ``ParameterObject::GetDefaultParameterMap`` (checked in the tests)."""
    if transform_name not in _TRANSFORMS:
        raise ValueError(f"transform name {transform_name!r} is not one of {', '.join(_TRANSFORMS)}")
    if number_of_resolutions < 1:
        raise ValueError(f"number_of_resolutions must be >= 1, got {number_of_resolutions}")
    m: dict[str, Any] = {
        "AutomaticParameterEstimation": "true",
        "CheckNumberOfSamples": "true",
        "DefaultPixelValue": "0",
        "FinalBSplineInterpolationOrder": "3",
        "FixedImagePyramid": "FixedSmoothingImagePyramid",
        "ImageSampler": "RandomCoordinate",
        "Interpolator": "LinearInterpolator",
        "MaximumNumberOfIterations": "256",
        "MaximumNumberOfSamplingAttempts": "8",
        "Metric": "AdvancedMattesMutualInformation",
        "MovingImagePyramid": "MovingSmoothingImagePyramid",
        "NewSamplesEveryIteration": "true",
        "NumberOfResolutions": str(number_of_resolutions),
        "NumberOfSamplesForExactGradient": "4096",
        "NumberOfSpatialSamples": "2048",
        "Optimizer": "AdaptiveStochasticGradientDescent",
        "Registration": "MultiResolutionRegistration",
        "ResampleInterpolator": "FinalBSplineInterpolator",
        "Resampler": "DefaultResampler",
        "ResultImageFormat": "nii",
        "Transform": _TRANSFORMS[transform_name],
        "WriteIterationInfo": "false",
        "WriteResultImage": "true",
    }
    if transform_name == "translation":
        m["AutomaticTransformInitialization"] = "true"
    if transform_name in ("rigid", "affine"):
        m["AutomaticScalesEstimation"] = "true"
    if transform_name in ("bspline", "groupwise"):
        m["FinalGridSpacingInPhysicalUnits"] = f"{final_grid_spacing_in_physical_units:.6f}"
        # Grid spacing halves every two levels: 2^((levels - 1 - level) / 2).
        m["GridSpacingSchedule"] = tuple(
            _schedule_value(2.0 ** ((number_of_resolutions - 1 - i) / 2)) for i in range(number_of_resolutions)
        )
    if transform_name == "bspline":
        m["Metric"] = ("AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty")
        m["Metric0Weight"] = "1.0"
        m["Metric1Weight"] = "1.0"
        m["Registration"] = "MultiMetricMultiResolutionRegistration"
    if transform_name == "groupwise":
        m["Interpolator"] = "ReducedDimensionBSplineInterpolator"
        m["Metric"] = "VarianceOverLastDimensionMetric"
        m["ResampleInterpolator"] = "FinalReducedDimensionBSplineInterpolator"
    return to_parameter_map(m)


def _schedule_value(v: float) -> str:
    """Shortest text that reads back as the same double; whole numbers without a decimal point."""
    rounded = round(v)
    return str(rounded) if abs(v - rounded) < 1e-12 else repr(v)
