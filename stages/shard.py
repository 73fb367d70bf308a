"""DVC stage `shard`: raw images + captions -> webdataset training shards with a manifest.

Reads: data. Writes: <data.root>/shards (tars, manifest.json, bad_samples.json, run_info.json),
reports/metrics/shard.json. `data=synthetic` joins its caption table by URL; real data sets read the
captions img2dataset stored with each image, one source after another (Merged-30M: all three).
"""

from pathlib import Path

from cosmos.config.params import is_synthetic, shard_config, web_sources
from cosmos.data.captions import caption_format
from cosmos.data.download.config import expected_images
from cosmos.data.shard import ShardSource, shard_sources
from cosmos.io.atomic import atomic_write_json
from cosmos.io.provenance import write_run_info
from cosmos.stage import run_stage


def main(params: dict) -> None:
    data = params["data"]
    raw, out = Path(data["root"]) / "raw", Path(data["root"]) / "shards"
    if is_synthetic(data):
        sources = [ShardSource(raw / "pretrain" / "images", table=raw / "pretrain" / "annotations.csv")]
    else:
        sources = [
            ShardSource(raw / "pretrain" / name / "images", fmt=caption_format(src.format), name=name,
                        expected=expected_images(raw, name))
            for name, src in web_sources(data).items()
        ]
    manifest = shard_sources(sources, out, shard_config(data))
    write_run_info(out, "shard", {"data": data}, params.get("seed"))
    metrics = {k: manifest[k] for k in ("num_samples", "num_shards", "bad_fraction", "skipped")}
    atomic_write_json("reports/metrics/shard.json", metrics)


if __name__ == "__main__":
    run_stage("shard", main)
