"""DVC stage `download`: fetch (or, for `data=synthetic`, generate) the raw data set and the eval sets.

Reads: seed, data. Writes: <data.root>/raw (+ run_info.json), reports/metrics/download.json.
Real data sets (`data.sources`) resume in `data.download.work_dir` and are published under
<data.root>/raw/pretrain/<source>/ (see docs/data.md).
"""

from cosmos.config.params import download_config, is_synthetic, scene_config, split_sizes, web_sources
from cosmos.data.download.pipeline import download_web_dataset
from cosmos.data.synthetic.generate import write_synthetic_benchmark
from cosmos.io.atomic import atomic_write_json
from cosmos.io.provenance import write_run_info
from cosmos.stage import run_stage


def main(params: dict) -> None:
    data = params["data"]
    out = f"{data['root']}/raw"
    if is_synthetic(data):
        manifest = write_synthetic_benchmark(out, params["seed"], scene_config(data), split_sizes(data))
        metrics = manifest["splits"]
    else:
        metrics = download_web_dataset(web_sources(data), download_config(data), out)
    write_run_info(out, "download", {"seed": params["seed"], "data": data}, params["seed"])
    atomic_write_json("reports/metrics/download.json", {"dataset": data["name"], **metrics})


if __name__ == "__main__":
    run_stage("download", main)
