"""Read `params.yaml` in the stages and turn its sections into typed library arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cosmos.config.sections import check_keys
from cosmos.data.download.config import DownloadConfig, SourceConfig
from cosmos.data.shard import ShardConfig
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
    if not isinstance(section, dict):
        raise ValueError(f"{prefix}: expected a mapping, got {section!r}")
    check_keys(cls, section, prefix, require_all=False)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{prefix}: {err}") from err


def is_synthetic(data: dict[str, Any]) -> bool:
    """`data=synthetic` generates its data; every other data set downloads `data.sources`."""
    return data["name"] == "synthetic"


def scene_config(data: dict[str, Any]) -> SceneConfig | None:
    """The synthetic generator's settings; None for a real data set (`data.generator: null`)."""
    if data.get("generator") is None and not is_synthetic(data):
        return None
    return _typed(SceneConfig, data["generator"], "data.generator")


def split_sizes(data: dict[str, Any]) -> SplitSizes | None:
    """The synthetic split sizes; None for a real data set (`data.sizes: null`)."""
    if data.get("sizes") is None and not is_synthetic(data):
        return None
    return _typed(SplitSizes, data["sizes"], "data.sizes")


def web_sources(data: dict[str, Any]) -> dict[str, SourceConfig]:
    """`data.sources`: name -> where its caption tables come from (real data sets only), in config order.
    A source set to null (`-S data.sources.yfcc15m_recap=null`) is left out."""
    sources = {name: section for name, section in (data.get("sources") or {}).items() if section is not None}
    if not sources:
        raise ValueError(f"data={data['name']}: data.sources is empty; a real data set lists its sources")
    return {name: _typed(SourceConfig, section, f"data.sources.{name}") for name, section in sources.items()}


def download_config(data: dict[str, Any]) -> DownloadConfig:
    return _typed(DownloadConfig, data.get("download"), "data.download")


def shard_config(data: dict[str, Any]) -> ShardConfig:
    return _typed(ShardConfig, data["shard"], "data.shard")
