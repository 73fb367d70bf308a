"""Config tier: params.yaml is the composition of conf/, every group option composes, bad keys are named."""

from __future__ import annotations


import pytest
import yaml

from cosmos.config.compose import compose_params
from cosmos.config.params import scene_config, split_sizes
from tests.conftest import REPO_ROOT


def test_params_yaml_is_the_composition_of_conf():
    committed = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == compose_params(), (
        "params.yaml is stale: run `python -m cosmos.config.compose` (or `dvc exp run`) after editing conf/"
    )


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", sorted(p.name for p in (REPO_ROOT / "conf").iterdir() if p.is_dir()))
def test_every_group_option_composes_and_validates(group):
    for option in _options(group):
        params = yaml.safe_load(compose_params([f"{group}={option}"]))
        scene_config(params["data"])
        split_sizes(params["data"])


def test_debug_profile_shrinks_the_data():
    params = yaml.safe_load(compose_params(["profile=debug"]))
    assert params["profile"]["name"] == "debug"
    assert params["data"]["sizes"]["train"] < 1000


def test_every_config_file_documents_itself():
    for path in (REPO_ROOT / "conf").rglob("*.yaml"):
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("#"), f"{path} must open with a comment: purpose, command, expected result"


def test_unknown_key_is_named():
    params = yaml.safe_load(compose_params())
    params["data"]["generator"]["n_objects"] = 3
    with pytest.raises(ValueError, match=r"data.generator: unknown key\(s\) \['n_objects'\]"):
        scene_config(params["data"])
    params = yaml.safe_load(compose_params(["data.sizes.train=0"]))
    with pytest.raises(ValueError, match="data.sizes.train=0"):
        split_sizes(params["data"])


@pytest.mark.parametrize("override, expected", [
    ("model=nonexistent", "compose failed: no option 'nonexistent' in config group 'model': use one of "
                          "cosmos-small, cosmos-tiny, vit-b-16 (files under conf/model/). Nothing was written."),
    ("train.batchsize=8", "compose failed: unknown key 'train.batchsize': check its spelling against conf/; "
                          "keys of train: accum_steps, batch_size,"),
])
def test_a_bad_override_is_one_line_naming_the_fix(override, expected, tmp_path):
    from cosmos.config.compose import main

    out = tmp_path / "params.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main([override, "--out", str(out)])
    message = str(exit_info.value.code)
    assert "\n" not in message and message.startswith(expected)
    assert not out.exists()
