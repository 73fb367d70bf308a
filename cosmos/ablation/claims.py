"""The paper's ablation claims, each checked against the grid: reproduced / not reproduced / not measurable.

A claim is a set of differences between variants (linear combinations of their bootstrap replicates,
:mod:`cosmos.ablation.estimates`) that the paper says are positive. Verdicts:

- **not measurable**: a variant the claim needs was not trained (the default grid leaves some rows to
  ``ablation=full``), or its metric is missing;
- **reproduced**: every difference's 95% interval lies above zero;
- **not reproduced**: otherwise; each difference is listed with its interval and whether it is a loss
  (interval below zero) or no measurable difference (interval containing zero).

Retrieval claims are judged on ``mean_R@1`` = (I2T R@1 + T2I R@1) / 2, since the paper's Table 5 leads with
retrieval; segmentation on both synthetic benchmarks; suppression on both dominant - minor probe gaps
(object shape and colour). The first version used the shape gap alone; after the first default run showed
shape unlearnt by every model (object probes at chance), the claim was made to require both gaps: a
stricter test, widened after seeing data, and said so in docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmos.ablation.grid import BASE
from cosmos.report.intervals import Estimate, format_interval

# Paper Table 5, in row order: CLIP, + multi-crop, + image distillation, + text crop, + text distillation,
# + cross-attention (= COSMOS).
TABLE5 = ("clip", "clip_multicrop", "clip_multicrop_imgdistill", "clip_multicrop_imgdistill_textcrop",
          "no_cross_attn", BASE)
_STEP_NAMES = ("multi-crop", "image self-distillation", "text crop", "text self-distillation", "cross-attention")

EstimateFn = Callable[[str, str], Estimate | None]  # (variant, metric path) -> estimate


@dataclass(frozen=True)
class Term:
    """One difference the claim expects to be positive: sum(plus) - sum(minus) of one metric."""

    label: str
    metric: str
    plus: tuple[str, ...]
    minus: tuple[str, ...]


@dataclass(frozen=True)
class Claim:
    text: str
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str  # reproduced | not reproduced | not measurable
    details: tuple[str, ...]


def paper_claims(weights: str) -> tuple[Claim, ...]:
    """The claims of the paper's ablation (section 4.4, Table 5), on the metric paths of ``weights``."""
    r1 = f"retrieval.{weights}.mean_R@1"
    steps = tuple(Term(f"+ {name}", r1, (TABLE5[i + 1],), (TABLE5[i],)) for i, name in enumerate(_STEP_NAMES))
    text_crop = steps[2]
    largest = tuple(Term(f"text crop gain - {t.label.removeprefix('+ ')} gain", r1,
                         text_crop.plus + t.minus, text_crop.minus + t.plus)
                    for t in steps if t is not text_crop)
    sizes = (("25%", "cosmos_data25", "clip_data25"), ("50%", "cosmos_data50", "clip_data50"), ("100%", BASE, "clip"))
    seg = tuple(Term(f"COSMOS - CLIP, {b}", f"segmentation.teacher.{b}.mIoU", (BASE,), ("clip",))
                for b in ("synthetic_bg", "synthetic_stuff"))
    gaps = tuple(Term(f"gap(CLIP) - gap(COSMOS), {g[4:]}", f"compositional.{weights}.suppression.{g}", ("clip",), (BASE,))
                 for g in ("gap_obj", "gap_att"))
    return (
        Claim("Each step of Table 5 improves retrieval (the row order)", steps),
        Claim("Text crop is the largest gain of Table 5", largest),
        Claim("Text self-distillation helps (+ text distillation over + text crop)", (steps[3],)),
        Claim("Cross-attention helps (COSMOS over COSMOS w/o cross-attention)", (steps[4],)),
        Claim("COSMOS beats CLIP at every data size",
              tuple(Term(f"COSMOS - CLIP at {pct} data", r1, (a,), (b,)) for pct, a, b in sizes)),
        Claim("COSMOS helps segmentation (over CLIP)", seg),
        Claim("CLIP on alt text suppresses non-dominant objects more than COSMOS (dominant - minor gaps, "
              "shape and colour)", gaps),
    )


def _combine(est: EstimateFn, term: Term) -> Estimate | None:
    parts = [est(v, term.metric) for v in (*term.plus, *term.minus)]
    if any(p is None for p in parts):
        return None
    plus, minus = parts[:len(term.plus)], parts[len(term.plus):]
    total = plus[0]
    for p in plus[1:]:
        total = total + p
    for m in minus:
        total = total - m
    return total


def check_claim(claim: Claim, est: EstimateFn, trained: set[str]) -> Verdict:
    """The verdict on one claim; ``trained`` = the variants with results."""
    needed = sorted({v for t in claim.terms for v in (*t.plus, *t.minus)} - trained)
    if needed:
        return Verdict(claim, "not measurable", (f"needs {', '.join(needed)} (not trained here; "
                                                 "`dvc exp run -S ablation=full` trains every row)",))
    details, all_gain = [], True
    for term in claim.terms:
        diff = _combine(est, term)
        if diff is None:
            return Verdict(claim, "not measurable", (f"{term.label}: metric {term.metric} missing",))
        if not (np.isfinite(diff.lo) and np.isfinite(diff.hi)):
            return Verdict(claim, "not measurable", (f"{term.label}: no item scores, so no interval "
                                                     "(re-run the evaluation stages)",))
        verdict = diff.verdict()
        all_gain &= verdict == "gain"
        word = {"gain": "gain", "loss": "loss", "none": "no measurable difference"}[verdict]
        details.append(f"{term.label}: {format_interval(diff, signed=True)} ({word})")
    return Verdict(claim, "reproduced" if all_gain else "not reproduced", tuple(details))


def check_claims(weights: str, est: EstimateFn, trained: set[str]) -> list[Verdict]:
    return [check_claim(c, est, trained) for c in paper_claims(weights)]


def claims_markdown(verdicts: list[Verdict]) -> list[str]:
    lines = ["| claim | verdict | differences (95% interval) |", "|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.claim.text} | **{v.status}** | {'<br>'.join(v.details)} |")
    return lines


def claims_summary(verdicts: list[Verdict]) -> dict[str, Any]:
    """``{claim text: status}`` for the metrics JSON."""
    return {v.claim.text: v.status for v in verdicts}
