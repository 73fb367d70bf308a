"""The raw pre-training set, laid out as img2dataset's webdataset output plus a DreamLIP caption table.

`pretrain/images/{00000..}.tar` hold `<key>.jpg` and `<key>.json` ({"key", "url", "status", "width",
"height"}), as `img2dataset --output_format webdataset` writes them, each with its `{00000..}_stats.json`
(img2dataset's per-shard counts: `shard` reads `successes` to count what a truncated tar lost);
`pretrain/annotations.csv` has the
DreamLIP columns (`Image Path` = url, `raw_caption`, `shortIB_captions`, ... , `longLLA_captions`), each
caption a plain string as in `cc3m_3long_3short_1raw_captions_url.csv`. The `shard` stage joins the two by
URL, never by row index (reference section 9: DreamLIP's row order does not match img2dataset's keys).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds

from cosmos.data.formats.dreamlip import URL_COLUMN
from cosmos.data.images import encode_jpeg
from cosmos.data.synthetic.captions import CAPTION_FIELDS, dreamlip_captions
from cosmos.data.synthetic.scene import SceneConfig, sample_rng, sample_scene

URL_PREFIX = "synthetic://train/"
TAR_MTIME = 0.0  # fixed tar header times make shards byte-identical across runs


def caption_string(sentences: list[str]) -> str:
    """DreamLIP stores each caption as one string: sentences joined with '. ', ending in '.'."""
    return ". ".join(sentences) + "."


def _write_stats(path: Path, count: int) -> None:
    """img2dataset's per-shard stats, every image a success; no timings, so the file is reproducible."""
    stats = {"count": count, "successes": count, "failed_to_download": 0, "failed_to_resize": 0,
             "status_dict": {"success": count}}
    path.write_text(json.dumps(stats, indent=4) + "\n", encoding="utf-8")


def write_pretrain_raw(root: Path, seed: int, cfg: SceneConfig, num_samples: int, samples_per_tar: int) -> dict:
    """Generate `num_samples` training scenes into `root`; returns counts for the manifest."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    writer = None
    for i in range(num_samples):
        if i % samples_per_tar == 0:
            if writer is not None:
                writer.close()
            shard = f"{i // samples_per_tar:05d}"
            writer = wds.TarWriter(str(root / "images" / f"{shard}.tar"), mtime=TAR_MTIME)
            _write_stats(root / "images" / f"{shard}_stats.json", min(samples_per_tar, num_samples - i))
        rng = sample_rng(seed, "train", i)
        scene = sample_scene(rng, cfg)
        key = f"{i:09d}"
        url = f"{URL_PREFIX}{key}.jpg"
        meta = {"key": key, "url": url, "status": "success", "width": cfg.image_size, "height": cfg.image_size}
        writer.write({"__key__": key, "jpg": encode_jpeg(scene.image), "json": json.dumps(meta).encode()})
        captions = dreamlip_captions(scene, rng)
        rows.append({URL_COLUMN: url, **{f: caption_string(captions[f]) for f in CAPTION_FIELDS}})
    if writer is not None:
        writer.close()
    # Shuffle the table rows so that only the URL join, never row order, can match captions to images.
    order = np.random.default_rng(seed).permutation(len(rows))
    buf = io.StringIO()
    table = csv.DictWriter(buf, fieldnames=[URL_COLUMN, *CAPTION_FIELDS], lineterminator="\n")
    table.writeheader()
    for j in order:
        table.writerow(rows[j])
    (root / "annotations.csv").write_text(buf.getvalue(), encoding="utf-8")
    return {"samples": num_samples, "tars": -(-num_samples // samples_per_tar)}
