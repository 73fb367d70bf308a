"""DVC stage `shard`: raw images + DreamLIP caption table -> webdataset training shards with a manifest.

Reads: data. Writes: <data.root>/shards (tars, manifest.json, bad_samples.json, run_info.json),
reports/metrics/shard.json.
"""

from cosmos.data.shard import shard_dataset
from cosmos.io.atomic import atomic_write_json
from cosmos.io.provenance import write_run_info
from cosmos.stage import run_stage


def main(params: dict) -> None:
    data = params["data"]
    raw, out = f"{data['root']}/raw/pretrain", f"{data['root']}/shards"
    manifest = shard_dataset(
        images_dir=f"{raw}/images",
        table_path=f"{raw}/annotations.csv",
        out_dir=out,
        samples_per_shard=data["shard"]["samples_per_shard"],
        max_bad_fraction=data["shard"]["max_bad_fraction"],
    )
    write_run_info(out, "shard", {"data": data}, params.get("seed"))
    metrics = {k: manifest[k] for k in ("num_samples", "num_shards", "bad_fraction", "skipped")}
    atomic_write_json("reports/metrics/shard.json", metrics)


if __name__ == "__main__":
    run_stage("shard", main)
