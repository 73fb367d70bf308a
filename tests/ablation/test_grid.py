"""Unit tier for the ablation grid: variants are base + overrides, bad overrides are named."""

from __future__ import annotations

import pytest
import yaml

from cosmos.ablation.grid import BASE, deep_merge, variant_label, variant_names, variant_params
from cosmos.config.compose import compose_params


@pytest.fixture(scope="module")
def params():
    return yaml.safe_load(compose_params())


def test_deep_merge_replaces_leaves_and_keeps_the_rest():
    base = {"a": {"x": 1, "y": {"z": 2}}, "b": [1, 2]}
    merged = deep_merge(base, {"a": {"y": {"z": 5}}, "b": [3]})
    assert merged == {"a": {"x": 1, "y": {"z": 5}}, "b": [3]}
    assert base["a"]["y"]["z"] == 2, "the base is not modified"
    with pytest.raises(ValueError, match=r"a\.w: not a key of the base params"):
        deep_merge(base, {"a": {"w": 1}})


def test_every_variant_in_run_is_base_plus_overrides(params):
    for name in variant_names(params):
        vparams = variant_params(params, name)
        assert vparams["model"] == params["model"] and vparams["data"] == params["data"]
        assert "ablation" not in vparams
    assert variant_params(params, "cosmos_data25")["train"]["data_fraction"] == 0.25
    assert variant_params(params, "cosmos_data25")["train"]["batch_size"] == params["train"]["batch_size"]
    assert variant_params(params, "no_text_crop")["distill"] == {**params["distill"], "text_crop": False}
    clip = variant_params(params, "clip")["distill"]
    assert clip["method"] == "clip" and clip["caption_source"] == "raw"


def test_base_method_change_reaches_only_the_base_row(params):
    """`-S distill.text_crop=false` changes the base; no variant reads the base distill section."""
    changed = yaml.safe_load(compose_params(["distill.text_crop=false"]))
    for name in variant_names(params):
        assert variant_params(changed, name) == variant_params(params, name), name
    budget = yaml.safe_load(compose_params(["train.batch_size=16"]))
    assert variant_params(budget, "clip")["train"]["batch_size"] == 16


def test_bad_variant_tables_are_named(params):
    broken = yaml.safe_load(compose_params())
    broken["ablation"]["run"].append("nope")
    with pytest.raises(ValueError, match=r"ablation.run lists \['nope'\]"):
        variant_names(broken)
    broken = yaml.safe_load(compose_params())
    del broken["ablation"]["variants"]["clip"]["distill"]
    with pytest.raises(ValueError, match="must set distill"):
        variant_params(broken, "clip")
    broken = yaml.safe_load(compose_params())
    broken["ablation"]["variants"]["clip"]["data"] = {"root": "x"}
    with pytest.raises(ValueError, match=r"cannot override \['data'\]"):
        variant_params(broken, "clip")
    assert variant_label(params, BASE) == "base (cosmos)"
