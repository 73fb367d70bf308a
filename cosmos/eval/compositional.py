"""Compositional understanding on SugarCrepe-format probes (Hsieh et al., 2023).

Each record pairs an image with a true caption and a hard negative; accuracy (percent) is the fraction of
records where sim(image, caption) > sim(image, negative_caption), reported per probe type (json file).
A tie counts as wrong. Chance is 50%.
"""

from __future__ import annotations

from pathlib import Path

from cosmos.data.formats.sugarcrepe import read_probe
from cosmos.eval.embed import embed_images, embed_texts
from cosmos.eval.sources import EvalModel

__all__ = ["probe_accuracy", "evaluate_compositional"]


def probe_accuracy(em: EvalModel, records: list[dict[str, str]], image_root: str | Path,
                   batch_size: int = 64) -> float:
    """Percent of records whose true caption outscores its negative for the record's image."""
    if not records:
        raise ValueError("empty probe")
    files = sorted({r["filename"] for r in records})
    img = embed_images(em, [Path(image_root) / f for f in files], batch_size, desc="probe images")
    row = {f: i for i, f in enumerate(files)}
    idx = [row[r["filename"]] for r in records]
    pos = embed_texts(em, [r["caption"] for r in records], desc="captions")
    neg = embed_texts(em, [r["negative_caption"] for r in records], desc="negatives")
    img = img[idx]
    correct = (img * pos).sum(1) > (img * neg).sum(1)
    return 100.0 * correct.float().mean().item()


def evaluate_compositional(em: EvalModel, root: str | Path, probe_types: list[str], image_dir: str = "images",
                           batch_size: int = 64) -> dict[str, float]:
    """``{type: accuracy}`` for each ``<root>/<type>.json`` plus their unweighted ``mean``."""
    root = Path(root)
    out = {t: probe_accuracy(em, read_probe(root / f"{t}.json"), root / image_dir, batch_size) for t in probe_types}
    out["mean"] = sum(out.values()) / len(out)
    return out
