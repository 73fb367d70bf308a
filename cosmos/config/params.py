"""Read `params.yaml` in the stages and turn its sections into typed library arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cosmos.config.sections import check_keys
from cosmos.data.synthetic.generate import SplitSizes
from cosmos.data.synthetic.scene import SceneConfig


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run `dvc exp run` (which composes conf/) or `python -m cosmos.config.compose`"
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _typed(cls, section: dict[str, Any], prefix: str):
    check_keys(cls, section, prefix, require_all=False)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{prefix}: {err}") from err


def scene_config(data: dict[str, Any]) -> SceneConfig:
    return _typed(SceneConfig, data["generator"], "data.generator")


def split_sizes(data: dict[str, Any]) -> SplitSizes:
    return _typed(SplitSizes, data["sizes"], "data.sizes")
