"""Bootstrap intervals over evaluation items and training seeds, for every number in the ablation report.

Every reported metric is a *ratio metric* over evaluation items (images, captions, probe records):

    value = 100 * mean_g ( sum_i num[i, g] / sum_i den[i, g] )         num, den: [N, G]

with G = 1 for R@K and top-1 (num = hit, den = 1), G = classes for mIoU (num = intersection pixels, den =
union pixels of image i; IoU is additive over images) and G = probe types for a mean over probe files. A
group whose resampled denominator is zero is left out of the mean (mIoU's nanmean over absent classes).

Uncertainty combines the two sources a researcher cares about (a hierarchical bootstrap): each of B
replicates draws the N evaluation items with replacement and, for a run with S seeds, S seeds with
replacement; the replicate value is the mean over the drawn seeds of the metric on the drawn items. The 95%
interval is the 2.5 / 97.5 percentile of the replicates; the point estimate is the mean over seeds on all
items. Item draws depend only on (bootstrap seed, N), so two variants evaluated on the same items share them:
a difference A - B is computed per replicate (a paired bootstrap), and any linear combination of variants
(a difference of gains) is too. With 2 seeds the seed part is coarse (3 distinct draws); the report says how
many seeds each row has. Deterministic: numpy's PCG64 seeded from the bootstrap seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
BOOT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class ItemScores:
    """Per-item parts of one ratio metric: ``num``, ``den`` ``[N, G]`` (see the module docstring)."""

    num: np.ndarray
    den: np.ndarray

    def __post_init__(self) -> None:
        num = np.asarray(self.num, dtype=np.float64)
        den = np.asarray(self.den, dtype=np.float64)
        num = num[:, None] if num.ndim == 1 else num
        den = den[:, None] if den.ndim == 1 else den
        if num.shape != den.shape or num.ndim != 2 or num.shape[0] == 0:
            raise ValueError(f"item scores need equal non-empty [N, G] num and den, got {num.shape} and {den.shape}")
        if (den < 0).any() or (num < 0).any() or (num > den).any():
            raise ValueError("item scores need 0 <= num <= den")
        object.__setattr__(self, "num", num)
        object.__setattr__(self, "den", den)

    @property
    def n_items(self) -> int:
        return int(self.num.shape[0])

    def value(self) -> float:
        """The metric on all items, in percent."""
        return float(_ratio(self.num.sum(0)[None], self.den.sum(0)[None])[0])

    def resampled(self, idx: np.ndarray) -> np.ndarray:
        """``[B]`` metric values on the item draws ``idx [B, N]``."""
        return _ratio(self.num[idx].sum(1), self.den[idx].sum(1))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``100 * nanmean_g(num / den)`` over ``[B, G]`` sums; NaN where every group is empty."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    counts = np.isfinite(r).sum(1)
    total = np.nansum(r, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * total / np.maximum(counts, 1), np.nan)


def item_draws(n_items: int, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """``[B, N]`` item indices; identical for every run evaluated on the same N items (paired)."""
    rng = np.random.default_rng([seed, n_items])
    return rng.integers(0, n_items, size=(n_boot, n_items))


def seed_draws(n_seeds: int, key: str, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """``[B, S]`` seed indices for the run named ``key`` (independent between runs, fixed per name)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n_seeds])
    return rng.integers(0, n_seeds, size=(n_boot, n_seeds))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap replicates ``[B]``; ``seeds`` = training seeds behind it."""

    point: float
    replicates: np.ndarray
    seeds: int

    @property
    def lo(self) -> float:
        return _percentile(self.replicates, 100 * (1 - LEVEL) / 2)

    @property
    def hi(self) -> float:
        return _percentile(self.replicates, 100 * (1 + LEVEL) / 2)

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.point - other.point, self.replicates - other.replicates, min(self.seeds, other.seeds))

    def __add__(self, other: Estimate) -> Estimate:
        return Estimate(self.point + other.point, self.replicates + other.replicates, min(self.seeds, other.seeds))

    def verdict(self) -> str:
        """For a difference: ``gain`` / ``loss`` when the interval excludes zero, else ``none``."""
        if not np.isfinite(self.lo) or not np.isfinite(self.hi):
            return "none"
        if self.lo > 0:
            return "gain"
        if self.hi < 0:
            return "loss"
        return "none"


def _percentile(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else float("nan")


def estimate(per_seed: Sequence[ItemScores], key: str, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Estimate:
    """The mean over seeds of one metric, with item x seed bootstrap replicates (module docstring).

    ``per_seed``: the metric's item scores of each training seed, all on the same N items.
    """
    if not per_seed:
        raise ValueError(f"{key}: no runs to estimate from")
    n = {s.n_items for s in per_seed}
    if len(n) != 1:
        raise ValueError(f"{key}: the seeds were evaluated on different item counts {sorted(n)}")
    idx = item_draws(n.pop(), n_boot, seed)
    values = np.stack([s.resampled(idx) for s in per_seed])  # [S, B]
    draws = seed_draws(len(per_seed), key, n_boot, seed)  # [B, S]
    reps = np.nanmean(values[draws.T, np.arange(n_boot)[None, :]], axis=0)
    point = float(np.nanmean([s.value() for s in per_seed]))
    return Estimate(point, reps, len(per_seed))


def format_interval(est: Estimate | None, digits: int = 1, signed: bool = False) -> str:
    """``12.3 [10.1, 14.6]`` (``+1.2 [-0.3, 2.8]`` when ``signed``); an en dash when absent."""
    if est is None or not np.isfinite(est.point):
        return "–"
    sign = "+" if signed else ""
    if not (np.isfinite(est.lo) and np.isfinite(est.hi)):
        return f"{est.point:{sign}.{digits}f} (no interval)"
    return f"{est.point:{sign}.{digits}f} [{est.lo:.{digits}f}, {est.hi:.{digits}f}]"


def items_npz(items: Mapping[str, ItemScores]) -> bytes:
    """The ``.npz`` bytes of ``{metric path: ItemScores}`` (keys ``<path>|num`` and ``<path>|den``)."""
    import io

    arrays = {}
    for key, s in items.items():
        arrays[f"{key}|num"] = s.num.astype(np.float32 if _integral(s.num) else np.float64)
        arrays[f"{key}|den"] = s.den.astype(np.float32 if _integral(s.den) else np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _integral(a: np.ndarray) -> bool:
    return bool(np.all(a == np.rint(a)) and np.abs(a).max(initial=0) < 2**24)


def load_items(path) -> dict[str, ItemScores]:
    """Inverse of :func:`items_npz`; a file that is not an items archive stops with its path named."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = sorted({k.rsplit("|", 1)[0] for k in z.files})
            return {k: ItemScores(z[f"{k}|num"], z[f"{k}|den"]) for k in keys}
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a readable item-scores archive ({err}); re-run the evaluation "
                         "stage that writes it") from err
