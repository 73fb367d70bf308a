"""benchmarks/supervised_bound.py in a tiny configuration: it trains on the pre-training scenes' dominant shapes and
scores the object set exactly as `download` writes it.

Behaviour, not accuracy: a few steps learn little, so the checks are on what is evaluated and reported.
"""

import json

import numpy as np

from cosmos.data.synthetic.scene import SceneConfig
from tests.conftest import REPO_ROOT, load_script



def _bound():
    return load_script("benchmarks/supervised_bound.py", "supervised_bound")


def test_eval_set_is_the_download_object_set():
    """Class c's images have c's shape as their dominant object; labels follow the sorted class folders."""
    bound = _bound()
    cfg = SceneConfig(shapes=("star", "circle", "heart"), max_objects=3)
    images, labels = bound.eval_set(cfg, seed=3, per_class=2)
    assert labels == [0, 0, 1, 1, 2, 2] and len(images) == 6
    assert images[0].size == (cfg.image_size, cfg.image_size)


def test_train_labels_are_the_dominant_shapes():
    from cosmos.data.synthetic.scene import sample_rng, sample_scene

    bound = _bound()
    cfg = SceneConfig(shapes=("star", "circle", "heart"), max_objects=2)
    _, labels = bound.train_set(cfg, seed=1, n=5)
    expected = [sorted(cfg.shapes).index(sample_scene(sample_rng(1, "train", i), cfg).dominant.shape) for i in range(5)]
    assert labels == expected


def test_a_tiny_run_reports_per_seed_and_pooled_top1(tmp_path, monkeypatch):
    import torch

    # The script pins this process's torch threads (--threads); the tests after this one keep theirs.
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    out = tmp_path / "bound.json"
    result = _bound().main(["--params", str(REPO_ROOT / "params.yaml"), "--train", "64", "--per-class", "3",
                            "--seeds", "0", "--threads", "1", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["eval_images"] == 8 * 3 and saved["train_scenes"] == 64 and saved["surfaces"] == "patterned"
    assert saved["chance"] == 12.5 and len(saved["seeds"]) == 1
    top1 = saved["seeds"][0]["top1"]
    assert 0.0 <= top1 <= 100.0 and np.isclose(top1, result["top1"])
    lo, hi = saved["ci95"]
    assert lo <= saved["top1"] <= hi
