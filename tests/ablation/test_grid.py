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


def test_replicates_are_the_seed_axis(params):
    from cosmos.ablation.grid import extra_seed_runs, run_name, runs_of

    runs = extra_seed_runs(params)
    assert runs == [(v, 1) for v in params["ablation"]["replicated"]]
    assert {"base", "clip"} <= {v for v, _ in runs}
    assert runs_of(params, "clip") == ["clip", "clip-s1"] and runs_of(params, "no_text_crop") == ["no_text_crop"]
    assert run_name("base", 2) == "base-s2"
    three = yaml.safe_load(compose_params(["ablation.extra_seeds=[1,2]"]))
    assert runs_of(three, BASE) == ["base", "base-s1", "base-s2"]


def test_the_base_replicate_follows_the_base_config(params):
    assert variant_params(params, BASE)["distill"] == params["distill"]
    changed = yaml.safe_load(compose_params(["distill.text_crop=false"]))
    assert variant_params(changed, BASE)["distill"]["text_crop"] is False


def test_bad_seed_axes_are_named(params):
    from cosmos.ablation.grid import extra_seed_runs

    for seeds, match in (([0], "differ from seed=0"), ([1, 1], "distinct"), (["a"], "not an integer")):
        broken = yaml.safe_load(compose_params())
        broken["ablation"]["extra_seeds"] = seeds
        with pytest.raises(ValueError, match=match):
            extra_seed_runs(broken)
    broken = yaml.safe_load(compose_params())
    broken["ablation"]["replicated"] = ["silc"]
    with pytest.raises(ValueError, match=r"\['silc'\], which ablation.run does not train"):
        extra_seed_runs(broken)
    full = yaml.safe_load(compose_params(["ablation=full"]))
    assert len(full["ablation"]["run"]) == 12 and extra_seed_runs(full) == extra_seed_runs(params)


def test_a_replicate_outside_the_grid_is_refused(params):
    from cosmos.ablation.run import train_variant

    with pytest.raises(ValueError, match="silc at seed 1 is not in the grid"):
        train_variant(params, "silc", 1)
