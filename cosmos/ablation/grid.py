"""Variants of the base experiment, as data.

`params["ablation"]` (composed from `conf/ablation/*.yaml`) holds `run`, the ordered list of variant names
the pipeline trains, and `variants`, a mapping name -> overrides. A variant's params are the base params with
its overrides merged in (nested dicts merge key by key, everything else replaces). Every variant names its
own `distill` section (through Hydra package-targeted defaults), so changing the base method with
`dvc exp run -S distill.text_crop=false` changes the base row only, while a change to the shared training
budget (`train`, `optim`, `model`, `data`) reaches every variant that does not override it.

Seeds: each variant trains once at the top-level `seed` (run name = the variant name). The variants listed in
`ablation.replicated` train again at each of `ablation.extra_seeds` (run name `<variant>-s<seed>`; the
seed changes initialisation, shuffling and augmentation, not the data). `base` may be replicated: its
entry in the variant table is the base `distill` itself (`${distill}`), so a replicate follows any
`-S distill.<key>=...` change of the base.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

BASE = "base"
_OVERRIDABLE = ("distill", "train", "optim", "model")


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`base` with `overrides` merged in; an override key absent from `base` is an error naming it."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if key not in out:
            raise ValueError(f"{path}: not a key of the base params (typo?); known: {sorted(out)}")
        if isinstance(value, Mapping) and isinstance(out[key], Mapping):
            out[key] = deep_merge(out[key], value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def variant_names(params: Mapping[str, Any]) -> list[str]:
    """The variants the pipeline runs, in order; validated against the variant table."""
    ablation = params["ablation"]
    names = list(ablation["run"])
    unknown = [n for n in names if n not in ablation["variants"]]
    if unknown:
        raise ValueError(f"ablation.run lists {unknown}, which ablation.variants does not define")
    if BASE in names:
        raise ValueError(f"ablation.run: {BASE!r} is the base experiment itself (stage pretrain); remove it")
    return names


def variant_params(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Base params with variant `name`'s overrides applied (the params its train and eval stages read)."""
    variants = params["ablation"]["variants"]
    if name not in variants:
        raise ValueError(f"unknown variant {name!r}; ablation.variants defines {sorted(variants)}")
    overrides = variants[name] or {}
    if "distill" not in overrides:
        raise ValueError(f"ablation.variants.{name} must set distill (a /distill@ default) so that base "
                         "method changes do not silently change it")
    bad = sorted(set(overrides) - set(_OVERRIDABLE) - {"label"})
    if bad:
        raise ValueError(f"ablation.variants.{name}: cannot override {bad}; overridable: {list(_OVERRIDABLE)}")
    merged = deep_merge({k: v for k, v in params.items() if k != "ablation"},
                       {k: v for k, v in overrides.items() if k != "label"}, f"ablation.variants.{name}")
    return merged


def variant_label(params: Mapping[str, Any], name: str) -> str:
    if name == BASE:
        return "base (" + str(params["distill"]["method"]) + ")"
    return str((params["ablation"]["variants"][name] or {}).get("label", name))


def run_name(variant: str, seed: int | None = None) -> str:
    """The run of ``variant`` at the top-level seed (``seed=None``) or at extra seed ``seed``."""
    return variant if seed is None else f"{variant}-s{seed}"


def extra_seed_runs(params: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(variant, seed)`` of every replicate the pipeline trains, validated against the variant table."""
    ablation = params["ablation"]
    seeds, replicated = list(ablation.get("extra_seeds") or []), list(ablation.get("replicated") or [])
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool):
            raise ValueError(f"ablation.extra_seeds: {s!r} is not an integer seed")
    if len(set(seeds)) != len(seeds) or params.get("seed") in seeds:
        raise ValueError(f"ablation.extra_seeds={seeds} must be distinct and differ from seed={params.get('seed')} "
                         "(the seed every variant already trains at)")
    unknown = [v for v in replicated if v not in ablation["variants"]]
    if unknown:
        raise ValueError(f"ablation.replicated lists {unknown}, which ablation.variants does not define")
    runs = set(variant_names(params)) | {BASE}
    absent = [v for v in replicated if v not in runs]
    if absent:
        raise ValueError(f"ablation.replicated lists {absent}, which ablation.run does not train: add them to "
                         "ablation.run or remove them from ablation.replicated")
    return [(v, s) for v in replicated for s in seeds]


def runs_of(params: Mapping[str, Any], variant: str) -> list[str]:
    """Run names behind one row of the report: the variant at the top-level seed, then its replicates."""
    return [variant] + [run_name(v, s) for v, s in extra_seed_runs(params) if v == variant]
