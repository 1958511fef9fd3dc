"""ParameterObject: itk-elastix's methods, elastix's file syntax, and interchange with itk.ParameterObject."""

from __future__ import annotations

from pathlib import Path

import itk
import pytest
from impact_elastix import ParameterObject
from impact_elastix.parameter_object import default_parameter_map, format_parameter_map, parse_parameter_text


@pytest.mark.parametrize("name", ["translation", "rigid", "affine", "bspline", "spline", "groupwise"])
@pytest.mark.parametrize("levels", [1, 3, 4, 6])
def test_default_maps_equal_itk_elastix(name: str, levels: int) -> None:
    for spacing in (10.0, 12.5):
        expected = dict(itk.ParameterObject.GetDefaultParameterMap(name, levels, spacing))
        assert ParameterObject.GetDefaultParameterMap(name, levels, spacing) == expected


def test_unknown_default_map_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="'bsplines' is not one of translation, rigid, affine, bspline"):
        default_parameter_map("bsplines")


def test_parameter_file_syntax() -> None:
    text = """// a comment
(Metric "Impact")   // trailing comment
(ModelsPath "/a b/M.pt")
(GridSpacingSchedule 4 2.0 1)
(VoxelSize "6*6*6" "1.5*1.5*1.5")
(Url "http://x//y")
"""
    m = parse_parameter_text(text)
    assert m == {
        "Metric": ("Impact",),
        "ModelsPath": ("/a b/M.pt",),
        "GridSpacingSchedule": ("4", "2.0", "1"),
        "VoxelSize": ("6*6*6", "1.5*1.5*1.5"),
        "Url": ("http://x//y",),
    }
    assert parse_parameter_text(format_parameter_map(m)) == m
    with pytest.raises(ValueError, match=r"line 2: expected '\(Name value \.\.\.\)'"):
        parse_parameter_text("(A 1)\nB 2\n", "x.txt")


def test_itk_methods_and_overloads(tmp_path: Path) -> None:
    po = ParameterObject.New()
    po.AddParameterMap(ParameterObject.GetDefaultParameterMap("affine", 2))
    po.AddParameterMap({"Transform": "BSplineTransform", "MaximumNumberOfIterations": 200, "UseX": True})
    assert po.GetNumberOfParameterMaps() == 2
    assert po.GetParameter(1, "MaximumNumberOfIterations") == ("200",)
    assert po.GetParameter(1, "UseX") == ("true",)
    po.SetParameter("NumberOfResolutions", "3")  # every map
    po.SetParameter(0, "Metric", ["AdvancedNormalizedCorrelation"])
    assert [po.GetParameter(i, "NumberOfResolutions") for i in range(2)] == [("3",), ("3",)]
    assert po.GetParameter(0, "Metric") == ("AdvancedNormalizedCorrelation",)
    po.RemoveParameter(1, "UseX")
    assert not po.HasParameter(1, "UseX")
    po.RemoveParameter("NumberOfResolutions")
    assert not any(po.HasParameter(i, "NumberOfResolutions") for i in range(2))
    with pytest.raises(IndexError, match="index 5 out of range: the object has 2 map"):
        po.GetParameterMap(5)

    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    po.WriteParameterFiles(files)
    again = ParameterObject.New()
    again.ReadParameterFile(files)
    assert again == po
    again.AddParameterFile(files[0])
    assert len(again) == 3
    again.SetParameterMap(0, po.GetParameterMap(1))
    assert again.GetParameterMap(0) == po.GetParameterMap(1)
    again.SetParameterMap(po.GetParameterMap(0))
    assert len(again) == 1
    with pytest.raises(FileNotFoundError, match="parameter file not found"):
        again.ReadParameterFile(tmp_path / "missing.txt")


def test_interchange_with_itk_parameter_object(tmp_path: Path) -> None:
    theirs = itk.ParameterObject.New()
    theirs.AddParameterMap(itk.ParameterObject.GetDefaultParameterMap("rigid"))
    theirs.AddParameterMap(itk.ParameterObject.GetDefaultParameterMap("bspline", 2, 8.0))
    ours = ParameterObject.from_any(theirs)
    assert ours.GetParameterMaps() == [dict(theirs.GetParameterMap(i)) for i in range(2)]
    back = ours.to_itk()
    assert [dict(back.GetParameterMap(i)) for i in range(2)] == ours.GetParameterMaps()
    # Files written by one are read identically by the other.
    ours.WriteParameterFile(ours.GetParameterMap(1), tmp_path / "ours.txt")
    read_by_itk = itk.ParameterObject.New()
    read_by_itk.ReadParameterFile(str(tmp_path / "ours.txt"))
    assert dict(read_by_itk.GetParameterMap(0)) == ours.GetParameterMap(1)
    single = itk.ParameterObject.New()
    single.AddParameterMap(theirs.GetParameterMap(0))
    single.WriteParameterFile(str(tmp_path / "theirs.txt"))
    assert ParameterObject.from_any(tmp_path / "theirs.txt").GetParameterMap(0) == dict(theirs.GetParameterMap(0))


def test_from_any_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="parameter_object must be an impact_elastix.ParameterObject"):
        ParameterObject.from_any(42)
