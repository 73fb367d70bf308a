"""Compositional understanding on SugarCrepe-format probes (Hsieh et al., 2023).

Each record pairs an image with a true caption and a hard negative; accuracy (percent) is the fraction of
records where sim(image, caption) > sim(image, negative_caption), reported per probe type (json file).
A tie counts as wrong. Chance is 50%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosmos.data.formats.sugarcrepe import read_probe
from cosmos.eval.embed import embed_images, embed_texts
from cosmos.eval.sources import EvalModel
from cosmos.report.intervals import ItemScores

__all__ = ["probe_correct", "probe_accuracy", "evaluate_compositional", "suppression_gaps"]


def probe_correct(em: EvalModel, records: list[dict[str, str]], image_root: str | Path,
                  batch_size: int = 64, text_batch_size: int = 256) -> np.ndarray:
    """``[R]`` bool: the record's true caption outscores its negative for the record's image (images embedded
    ``batch_size``, captions ``text_batch_size`` per forward; scores compared on the CPU)."""
    if not records:
        raise ValueError("empty probe")
    files = sorted({r["filename"] for r in records})
    img = embed_images(em, [Path(image_root) / f for f in files], batch_size, desc="probe images")
    row = {f: i for i, f in enumerate(files)}
    idx = [row[r["filename"]] for r in records]
    pos = embed_texts(em, [r["caption"] for r in records], text_batch_size, desc="captions")
    neg = embed_texts(em, [r["negative_caption"] for r in records], text_batch_size, desc="negatives")
    img = img[idx]
    return ((img * pos).sum(1) > (img * neg).sum(1)).numpy()


def probe_accuracy(em: EvalModel, records: list[dict[str, str]], image_root: str | Path,
                   batch_size: int = 64) -> float:
    """Percent of records whose true caption outscores its negative for the record's image."""
    return 100.0 * float(probe_correct(em, records, image_root, batch_size).mean())


def _hits_by_type(em: EvalModel, root: Path, probe_types: list[str], image_dir: str,
                  batch_size: int, text_batch_size: int) -> dict[str, np.ndarray]:
    """Per-record hits of every type, from one pass over the records of all types (types share images)."""
    records = {t: read_probe(root / f"{t}.json") for t in probe_types}
    empty = [t for t, r in records.items() if not r]
    if empty:
        raise ValueError(f"empty probe file(s) {empty} under {root}")
    hits = probe_correct(em, [r for t in probe_types for r in records[t]], root / image_dir, batch_size,
                         text_batch_size)
    out, start = {}, 0
    for t in probe_types:
        out[t] = hits[start:start + len(records[t])].astype(np.float64)
        start += len(records[t])
    return out


def evaluate_compositional(em: EvalModel, root: str | Path, probe_types: list[str], image_dir: str = "images",
                           batch_size: int = 64, items: dict[str, ItemScores] | None = None,
                           suppression: list[str] = (), text_batch_size: int = 256) -> dict:
    """``{type: accuracy}`` for each ``<root>/<type>.json`` plus their unweighted ``mean``, and under
    ``suppression`` the accuracy of each feature-suppression probe listed, with the gaps ``gap_obj`` =
    dominant_obj - minor_obj and ``gap_att`` = dominant_att - minor_att where both are listed.

    ``items``, when given, receives each type's per-record hits and ``mean`` as one ``[R, T]`` ratio metric
    over the records of all types (record r of type t: num = hit, den = 1 in column t only); the probes go
    under ``suppression.<type>``.
    """
    root = Path(root)
    hits = _hits_by_type(em, root, [*probe_types, *suppression], image_dir, batch_size, text_batch_size)
    out: dict = {t: 100.0 * float(hits[t].mean()) for t in probe_types}
    out["mean"] = sum(out.values()) / len(out)
    if suppression:
        sup = {t: 100.0 * float(hits[t].mean()) for t in suppression}
        out["suppression"] = {**sup, **{g: sup[a] - sup[b] for g, (a, b) in suppression_gaps(suppression).items()}}
    if items is not None:
        for t in probe_types:
            items[t] = ItemScores(hits[t], np.ones_like(hits[t]))
        items["mean"] = _stacked([hits[t] for t in probe_types])
        for t in suppression:
            items[f"suppression.{t}"] = ItemScores(hits[t], np.ones_like(hits[t]))
    return out


def suppression_gaps(probes: list[str]) -> dict[str, tuple[str, str]]:
    """The gaps the listed probes support: name -> (dominant probe, minor probe)."""
    pairs = {"gap_obj": ("dominant_obj", "minor_obj"), "gap_att": ("dominant_att", "minor_att")}
    return {g: ab for g, ab in pairs.items() if ab[0] in probes and ab[1] in probes}


def _stacked(hits: list[np.ndarray]) -> ItemScores:
    total = sum(len(h) for h in hits)
    num, den = np.zeros((total, len(hits))), np.zeros((total, len(hits)))
    row = 0
    for t, h in enumerate(hits):
        num[row:row + len(h), t], den[row:row + len(h), t] = h, 1.0
        row += len(h)
    return ItemScores(num, den)
