"""Generate the whole synthetic benchmark (the `download` stage for `data=synthetic`).

Deterministic from `seed`: sample i of split s is drawn from its own stream `SeedSequence([seed, s, i])`,
so changing a split's size never changes the samples it shares with the smaller run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from cosmos.data.synthetic.scene import SceneConfig
from cosmos.data.synthetic.write_benchmarks import (
    write_classification,
    write_compositional,
    write_retrieval,
    write_segmentation,
)
from cosmos.data.synthetic.write_pretrain import write_pretrain_raw
from cosmos.io.atomic import atomic_dir, atomic_write_json


@dataclass(frozen=True)
class SplitSizes:
    """Sample counts per split (the `data.sizes` config section)."""

    train: int = 20000
    retrieval: int = 500
    classification_per_class: int = 40
    segmentation: int = 200
    compositional: int = 300
    samples_per_tar: int = 1000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"data.sizes.{name}={value!r} must be a positive integer")


def write_synthetic_benchmark(out_dir: str | Path, seed: int, scene: SceneConfig, sizes: SplitSizes) -> dict:
    """Write every split under `out_dir` (atomically: all or nothing) and return the manifest."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        manifest = {
            "dataset": "synthetic",
            "seed": seed,
            "generator": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(scene).items()},
            "sizes": asdict(sizes),
            "splits": {
                "pretrain": write_pretrain_raw(tmp / "pretrain", seed, scene, sizes.train, sizes.samples_per_tar),
                "coco": write_retrieval(tmp / "coco", seed, scene, sizes.retrieval),
                "classification": write_classification(
                    tmp / "classification", seed, scene, sizes.classification_per_class
                ),
                "segmentation": write_segmentation(
                    tmp / "voc_bg", tmp / "voc_stuff", seed, scene, sizes.segmentation
                ),
                "sugarcrepe": write_compositional(tmp / "sugarcrepe", seed, scene, sizes.compositional),
            },
        }
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest
