"""Parameter parsing: both spellings, per-level values, and a clear error for each malformed value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from impact_elastix import _core

# The IMPACT README's spelling: one entry per level, models separated by spaces, sizes as 5*5*5.
README_SPELLING = {
    "ModelsPath": ["/m/a.pt /m/b.pt"],
    "Dimension": ["3 3"],
    "NumberOfChannels": ["1 1"],
    "PatchSize": ["5*5*5 7*7*7"],
    "VoxelSize": ["1.5*1.5*1.5 6*6*6", "3*3*3 6*6*6"],
    "LayersMask": ["01 1"],
    "SubsetFeatures": ["64 16"],
    "LayersWeight": ["1.0 0.5"],
    "Distance": ["Dice L2"],
    "PCA": ["0 0"],
    "Mode": ["Jacobian", "Static"],
    "GPU": ["-1"],
}
ELASTIX_531 = {
    "ImpactModelsPath0": ["/m/a.pt", "/m/b.pt"],
    "ImpactDimension0": ["3", "3"],
    "ImpactNumberOfChannels0": ["1", "1"],
    "ImpactPatchSize0": ["5", "5", "5", "7", "7", "7"],
    "ImpactVoxelSize0": ["1.5", "1.5", "1.5", "6", "6", "6"],
    "ImpactVoxelSize1": ["3", "3", "3", "6", "6", "6"],
    "ImpactLayersMask0": ["01", "1"],
    "ImpactSubsetFeatures0": ["64", "16"],
    "ImpactLayersWeight0": ["1.0", "0.5"],
    "ImpactDistance0": ["Dice", "L2"],
    "ImpactPCA0": ["0", "0"],
    "ImpactMode": ["Jacobian", "Static"],
    "ImpactGPU": ["-1"],
}


@pytest.mark.parametrize("level", [0, 1])
def test_both_spellings_agree(level: int) -> None:
    assert _core.parse_level(README_SPELLING, level) == _core.parse_level(ELASTIX_531, level)


def test_values() -> None:
    c = _core.parse_level(README_SPELLING, 1)
    assert c["mode"] == "Static"
    assert [m["patch_size"] for m in c["fixed_models"]] == [[5, 5, 5], [7, 7, 7]]
    assert c["fixed_models"][0]["voxel_size"] == [3, 3, 3]  # level 1 has its own entry
    assert [(layer["model"], layer["output"]) for layer in c["layers"]] == [(0, 1), (1, 0)]
    assert [layer["distance"] for layer in c["layers"]] == ["Dice", "L2"]
    assert [layer["subset_features"] for layer in c["layers"]] == [64, 16]
    assert c["moving_models"] == c["fixed_models"]


def test_missing_level_reuses_the_first() -> None:
    assert _core.parse_level(README_SPELLING, 3)["fixed_models"][0]["voxel_size"] == [1.5, 1.5, 1.5]
    assert _core.parse_level(ELASTIX_531, 3)["fixed_models"][0]["voxel_size"] == [1.5, 1.5, 1.5]


def test_defaults_follow_the_paper() -> None:
    c = _core.parse_level({"ModelsPath": ["m.pt"]}, 0)
    assert c["mode"] == "Jacobian" and c["gpu"] == -1 and c["features_map_update_interval"] == -1
    (m,) = c["fixed_models"]
    assert (m["dimension"], m["channels"], m["patch_size"], m["voxel_size"], m["layers_mask"]) == (
        3,
        1,
        [5, 5, 5],
        [1.5, 1.5, 1.5],
        "1",
    )
    (layer,) = c["layers"]
    assert (layer["subset_features"], layer["distance"], layer["weight"], layer["pca"]) == (32, "L2", 1.0, 0)


def test_fixed_and_moving_models() -> None:
    c = _core.parse_level(
        {
            "FixedModelsPath": ["f.pt"],
            "MovingModelsPath": ["m.pt"],
            "MovingPatchSize": ["7*7*7"],
            "FixedLayersMask": ["1"],
            "MovingLayersMask": ["01"],
        },
        0,
    )
    assert c["fixed_models"][0]["path"] == "f.pt" and c["moving_models"][0]["path"] == "m.pt"
    assert c["fixed_models"][0]["patch_size"] == [5, 5, 5] and c["moving_models"][0]["patch_size"] == [7, 7, 7]


def test_subset_features_zero_means_all_channels(lung_crop: tuple, m730: Path) -> None:
    (layer,) = _core.parse_level({"ModelsPath": ["m.pt"], "SubsetFeatures": ["0"]}, 0)["layers"]
    assert layer["subset_features"] == 0
    # In the engine: every call compares all 32 channels of M730, as "32" does; "4" draws subsets.
    fixed, fixed_geometry, moving, moving_geometry = lung_crop
    x = torch.tensor([[-80.0, -50.0, -1300.0], [-75.0, -55.0, -1295.0]], dtype=torch.float64)

    def values(subset: str) -> list[float]:
        params = {"ModelsPath": [str(m730)], "SubsetFeatures": [subset]}
        e = _core.Engine(params, 0, fixed, fixed_geometry, moving, moving_geometry)
        return [e.evaluate(x, x + 1.0, False)[0] for _ in range(3)]

    every, thirty_two, four = values("0"), values("32"), values("4")
    assert every[0] == every[1] == every[2]
    assert every == pytest.approx(thirty_two, rel=1e-6)
    assert len(set(four)) > 1  # subsets of 4 of the 32 channels change from call to call


def test_known_names_cover_both_spellings() -> None:
    names = set(_core.known_parameter_names(2))
    assert {"ModelsPath", "ImpactModelsPath0", "ImpactModelsPath1", "FixedPatchSize", "ImpactMode"} <= names


BAD = [
    ({}, r"\(ModelsPath\) is required"),
    ({"ModelsPath": ["a.pt"], "Distance": ["L3"]}, r'\(Distance "L3"\): unknown distance "L3"; allowed: L1, L2'),
    ({"ModelsPath": ["a.pt"], "Mode": ["Dynamic"]}, r'\(Mode "Dynamic"\): unknown mode; allowed: Jacobian, Static'),
    ({"ModelsPath": ["a.pt"], "PatchSize": ["5*5"]}, r'model 1 has Dimension 3, so "5\*5" needs 3 values'),
    ({"ImpactModelsPath0": ["a.pt"], "ImpactPatchSize0": ["5", "5"]}, r"ImpactPatchSize0 .* expected 3 values"),
    ({"ModelsPath": ["a.pt b.pt"], "Dimension": ["3"]}, r'\(Dimension "3"\): expected 2 value\(s\), one per model'),
    ({"ModelsPath": ["a.pt"], "Dimension": ["4"]}, r'"4" is not 2 or 3'),
    ({"ModelsPath": ["a.pt"], "LayersMask": ["012"]}, r'"012" must be a string of 0/1'),
    ({"ModelsPath": ["a.pt"], "LayersMask": ["00"]}, r"with at least one 1"),
    ({"ModelsPath": ["a.pt"], "Distance": ["L1 L2 L1"]}, r"expected 1 value\(s\), one per selected layer"),
    ({"ModelsPath": ["a.pt"], "VoxelSize": ["1.5*-1*1"]}, r'"-1" is not a positive number'),
    ({"ModelsPath": ["a.pt"], "PatchSize": ["0*0*0"]}, r"only allowed in Static mode"),
    ({"ModelsPath": ["a.pt"], "WriteFeatureMaps": ["true"]}, r'expects "false" or the directory'),
    ({"ModelsPath": ["a.pt"], "PCA": ["4"]}, r'PCA 4 needs Mode "Static"'),
    ({"ModelsPath": ["a.pt"], "FeaturesMapUpdateInterval": ["0"]}, r"0 is not allowed"),
    ({"ModelsPath": ["a.pt"], "GPU": ["gpu0"]}, r'"gpu0" is not a CUDA device index'),
    ({"ModelsPath": ["a.pt"], "ImpactModelsPath0": ["a.pt"]}, r"both ModelsPath and ImpactModelsPath0 are set"),
    ({"FixedModelsPath": ["a.pt"]}, r"must be given together"),
    (
        {"FixedModelsPath": ["a.pt"], "MovingModelsPath": ["b.pt"], "MovingLayersMask": ["11"]},
        r"select different numbers of layers",
    ),
]


@pytest.mark.parametrize(("parameters", "message"), BAD)
def test_errors_name_parameter_value_and_allowed(parameters: dict, message: str) -> None:
    with pytest.raises(_core.ParameterError, match=message):
        _core.parse_level(parameters, 0)


def test_jacobian_mode_bounds_the_samples_per_evaluation_by_default() -> None:
    assert _core.parse_level({"ModelsPath": ["/m/a.pt"]}, 0)["maximum_samples"] == 10000
    assert _core.parse_level({"ModelsPath": ["/m/a.pt"], "Mode": ["Static"]}, 0)["maximum_samples"] == 0
    limited = {"ModelsPath": ["/m/a.pt"], "ImpactMaximumSamplesPerEvaluation": ["0"], "MemoryLimit": ["2.5"]}
    c = _core.parse_level(limited, 0)
    assert (c["maximum_samples"], c["memory_limit_gb"]) == (0, 2.5)
    with pytest.raises(ValueError, match=r'\(MaximumSamplesPerEvaluation "-5"\).*a number of samples'):
        _core.parse_level({"ModelsPath": ["/m/a.pt"], "MaximumSamplesPerEvaluation": ["-5"]}, 0)


def test_model_paths_with_spaces(tmp_path: Path) -> None:
    """The IMPACT README's spelling splits ModelsPath at spaces: an existing file with spaces is one model,
    two such files are two, and a path that exists in no reading gets a hint with the other spelling."""
    folder = tmp_path / "my models"
    folder.mkdir()
    first, second = folder / "a model.pt", folder / "b.pt"
    first.write_bytes(b"x")
    second.write_bytes(b"x")
    one = _core.parse_level({"ModelsPath": [str(first)]}, 0)
    assert [m["path"] for m in one["fixed_models"]] == [str(first)]
    two = _core.parse_level({"ModelsPath": [f"{first} {second}"], "Dimension": ["3 3"]}, 0)
    assert [m["path"] for m in two["fixed_models"]] == [str(first), str(second)]
    missing = str(folder / "missing model.pt")
    hint = r"expected 3 value\(s\).*read as 3 models separated by spaces.*ImpactModelsPath0"
    with pytest.raises(ValueError, match=hint):
        _core.parse_level({"ModelsPath": [missing], "Dimension": ["3"]}, 0)


def test_plane_sampling() -> None:
    base = {"ModelsPath": ["m.pt"], "Dimension": ["2"], "PatchSize": ["7*7"], "VoxelSize": ["1*1"]}
    assert _core.parse_level(base, 0)["plane_sampling"] == "Oblique"
    assert _core.parse_level(base | {"PlaneSampling": ["Principal"]}, 0)["plane_sampling"] == "Principal"
    with pytest.raises(ValueError, match=r'\(PlaneSampling "Diagonal"\): unknown plane sampling; allowed: Principal'):
        _core.parse_level(base | {"PlaneSampling": ["Diagonal"]}, 0)
