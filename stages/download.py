"""DVC stage `download`: fetch (or, for `data=synthetic`, generate) the raw data set and the eval sets.

Reads: seed, data. Writes: <data.root>/raw (+ run_info.json), reports/metrics/download.json.
"""

from cosmos.config.params import scene_config, split_sizes
from cosmos.data.synthetic.generate import write_synthetic_benchmark
from cosmos.io.atomic import atomic_write_json
from cosmos.io.provenance import write_run_info
from cosmos.stage import run_stage


def main(params: dict) -> None:
    data = params["data"]
    if data["name"] != "synthetic":
        raise ValueError(f"data.name={data['name']!r}: only data=synthetic can be downloaded in this version")
    out = f"{data['root']}/raw"
    manifest = write_synthetic_benchmark(out, params["seed"], scene_config(data), split_sizes(data))
    write_run_info(out, "download", {"seed": params["seed"], "data": data}, params["seed"])
    atomic_write_json("reports/metrics/download.json", {"dataset": data["name"], **manifest["splits"]})


if __name__ == "__main__":
    run_stage("download", main)
