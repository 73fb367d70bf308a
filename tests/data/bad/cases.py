"""The bad-input cases: ``(label, case)`` pairs, each ``case(bench) -> Seen`` asserting what must hold.

A case raises ``AssertionError`` naming what the user saw instead when its input is not met with a one-line
error naming the cause and the fix, or a counted skip, or when it leaves a half-written output.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from tests.data.bad.corpus import (
    PRETRAIN, Bench, Seen, child_stage, compose, edit_captions, first_tar, metrics, new_project, png_bytes,
    raw_copy, rewrite_tar, stage,
)
from tests.malicious import Marker

TOTAL = 60  # training scenes of the bench


def _project(bench: Bench, name: str, overrides: list[str] = ()) -> Path:
    return new_project(bench.root / name, compose(list(overrides)))


# ----- shard: skipped and counted -----


def _shard_skip(bench: Bench, name: str, break_input, reason: str, lost: int = 1) -> Seen:
    project = _project(bench, name)
    pretrain = raw_copy(bench, project)
    break_input(pretrain)
    seen = stage(project, "shard")
    assert seen.code == 0, seen.stderr[-3000:]
    got = metrics(project, "shard")
    assert got["skipped"] == {reason: lost}, got
    assert got["num_samples"] == TOTAL - lost, got
    seen.outcome = f"skipped and counted: `{reason}`: {lost}; {got['num_samples']} of {TOTAL} samples sharded"
    return seen


def _replace_image(key: str, data: Callable[[str, bytes], tuple[str, bytes]]) -> Callable[[Path], None]:
    def edit(pretrain):
        rewrite_tar(first_tar(pretrain), lambda n, d: data(n, d) if n == f"{key}.jpg" else (n, d))
    return edit


def corrupt_jpeg(bench):
    return _shard_skip(bench, "corrupt-jpeg", _replace_image("000000003", lambda n, d: (n, b"not an image")),
                       "corrupt_image")


def truncated_jpeg(bench):
    return _shard_skip(bench, "truncated-jpeg", _replace_image("000000004", lambda n, d: (n, d[: len(d) // 2])),
                       "corrupt_image")


def truncated_png(bench):
    png = png_bytes()
    return _shard_skip(bench, "truncated-png",
                       _replace_image("000000005", lambda n, d: ("000000005.png", png[: len(png) // 2])),
                       "corrupt_image")


def missing_json(bench):
    def edit(pretrain):
        rewrite_tar(first_tar(pretrain), lambda n, d: None if n == "000000007.json" else (n, d))
    return _shard_skip(bench, "missing-json", edit, "malformed_metadata")


def non_utf8_caption(bench):
    return _shard_skip(bench, "non-utf8-caption", lambda p: edit_captions(p, "000000008", b"\xff\xfe caption"),
                       "malformed_caption")


def empty_caption(bench):
    return _shard_skip(bench, "empty-caption", lambda p: edit_captions(p, "000000009", b""), "malformed_caption")


def truncated_tar(bench):
    project = _project(bench, "truncated-tar", ["data.shard.max_bad_fraction=0.5"])
    tar = first_tar(raw_copy(bench, project))
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])
    seen = stage(project, "shard")
    assert seen.code == 0, seen.stderr[-3000:]
    got = metrics(project, "shard")
    lost = got["skipped"].get("truncated_tar", 0)
    assert lost >= 1 and got["num_samples"] + sum(got["skipped"].values()) == TOTAL, got
    seen.outcome = (f"skipped and counted: `truncated_tar`: {lost} (every sample after the cut, from img2dataset's "
                    f"stats); {got['num_samples']} + {sum(got['skipped'].values())} = {TOTAL}")
    return seen


# ----- shard: refused, nothing half-written -----


def too_many_bad(bench):
    project = _project(bench, "too-many-bad")
    pretrain = raw_copy(bench, project)
    bad = {f"{i:09d}.jpg" for i in range(10)}
    rewrite_tar(first_tar(pretrain), lambda n, d: (n, b"garbage") if n in bad else (n, d))
    previous = project / "data" / "shards"
    previous.mkdir()
    (previous / "manifest.json").write_text("{}", encoding="utf-8")
    line = stage(project, "shard").one_line_error()
    assert "10 of 60 samples are bad" in line and "max_bad_fraction" in line, line
    assert sorted(p.name for p in previous.iterdir()) == ["manifest.json"]
    assert not [p for p in previous.parent.iterdir() if p.name.startswith(".shards")], "temp output left behind"
    return Seen(1, line, outcome=f"exit 1: `{line}`; the previous shards untouched, no temp folder")


def caption_table_missing_columns(bench):
    project = _project(bench, "missing-columns")
    pretrain = raw_copy(bench, project)
    (pretrain / "annotations.csv").write_text("Image Path,raw_caption\nsynthetic://train/000000000.jpg,a thing\n",
                                              encoding="utf-8")
    seen = stage(project, "shard")
    line = seen.one_line_error()
    assert "lacks column" in line, line
    assert not (project / "data" / "shards").exists() and not (project / "reports").exists(), seen.files
    return Seen(1, line, outcome=f"exit 1: `{line}`; nothing written")


# ----- pretrain -----


def _pretrain_project(bench: Bench, name: str, overrides: list[str] = ()) -> tuple[Path, Path]:
    project = _project(bench, name, [*PRETRAIN, *overrides])
    shards = project / "data" / "shards"
    shutil.copytree(bench.shards, shards)
    return project, shards


def bad_training_samples(bench):
    project, shards = _pretrain_project(bench, "bad-training-samples", ["train.max_steps=0"])
    first = sorted(shards.glob("*.tar"))[0]
    keys = sorted({n.split(".")[0] for n in _names(first)})
    no_json, bad_jpg = f"{keys[1]}.json", f"{keys[2]}.jpg"
    rewrite_tar(first, lambda n, d: None if n == no_json else ((n, b"garbage") if n == bad_jpg else (n, d)))
    seen = child_stage(project)
    assert seen.code == 0, seen.stderr[-3000:]
    got = metrics(project, "pretrain")
    assert got["bad_samples"] >= 2, got
    seen.outcome = (f"trains to the end, skipping and counting: `bad_samples`: {got['bad_samples']} in "
                    "reports/metrics/pretrain.json (one sample without its json, one undecodable jpg)")
    return seen


def _names(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tf:
        return [m.name for m in tf if m.isfile()]


def non_finite_loss(bench):
    project, _ = _pretrain_project(bench, "nan-loss")
    seen = child_stage(project, "nan-loss:3")
    line = seen.one_line_error()
    assert "non-finite loss at step 2" in line and "lower optim.lr" in line, line
    ckpts = [f for f in seen.files if f.startswith("runs/pretrain/checkpoints/")]
    assert ckpts == ["runs/pretrain/checkpoints/step-00000002.pt"], ckpts
    assert "reports/metrics/pretrain.json" not in seen.files, seen.files
    return Seen(1, line, outcome=f"exit 1 at the first non-finite step: `{line[:150]}...`; step-00000002.pt kept, "
                                 "no final.pt, no metrics")


def malicious_resume_checkpoint(bench):
    project, _ = _pretrain_project(bench, "evil-resume")
    folder = project / "runs" / "pretrain" / "checkpoints"
    folder.mkdir(parents=True)
    marker = project / "PWNED"
    torch.save({"student": Marker(str(marker)), "step": 2}, folder / "step-00000002.pt")
    seen = child_stage(project)
    assert not marker.exists(), "the pickle ran"
    if seen.code == 0:
        assert "final.pt" in " ".join(seen.files)
        said = [line for line in seen.stderr.splitlines() + [""] if "step-00000002.pt" in line]
        return Seen(0, seen.stderr, outcome="never unpickled; " + (said[0] if said else "trained from step 0"))
    line = seen.one_line_error()
    assert "posix.system" in line and "train.resume=none" in line, line
    return Seen(1, line, outcome=f"exit 1, never unpickled: `{line}`")


# ----- configs -----


def _config_error(bench: Bench, name: str, overrides: list[str], stage_name: str, expect: str) -> Seen:
    project = _project(bench, name, overrides)
    if stage_name == "pretrain":
        shutil.copytree(bench.shards, project / "data" / "shards")
    seen = stage(project, stage_name)
    line = seen.one_line_error()
    assert expect in line, line
    assert not (project / "reports").exists() and not (project / "runs").exists(), seen.files
    return Seen(1, line, outcome=f"exit 1: `{line}`; nothing written")


def zero_size(bench):
    return _config_error(bench, "zero-size", ["data.sizes.train=0"], "download", "data.sizes.train=0")


def negative_size(bench):
    return _config_error(bench, "negative-size", ["data.sizes.retrieval=-5"], "download", "data.sizes.retrieval=-5")


def zero_batch(bench):
    return _config_error(bench, "zero-batch", [*PRETRAIN, "train.batch_size=0"], "pretrain", "train.batch_size")


def fp16_on_cpu(bench):
    return _config_error(bench, "fp16-cpu", [*PRETRAIN, "train.precision=fp16"], "pretrain", "fp16")


def unknown_key_in_params(bench):
    """``params.yaml`` edited by hand (or by a script) with a misspelt key: the stage names it."""
    project = _project(bench, "unknown-key", PRETRAIN)
    shutil.copytree(bench.shards, project / "data" / "shards")
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["batchsize"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    line = stage(project, "pretrain").one_line_error()
    assert "batchsize" in line and "unknown key" in line, line
    return Seen(1, line, outcome=f"exit 1: `{line}`")


def _compose_error(overrides: list[str], expect: str, tmp) -> Seen:
    from cosmos.config.compose import main

    out = tmp / "params.yaml"
    try:
        main([*overrides, "--out", str(out)])
    except SystemExit as exit_:
        line = str(exit_.code)
    else:
        raise AssertionError(f"compose accepted {overrides}")
    assert "\n" not in line and line.startswith(expect), line
    assert not out.exists()
    return Seen(1, line, outcome=f"exit 1: `{line[:160]}...`; params.yaml not written")


def unknown_key_override(bench):
    (bench.root / "compose-key").mkdir()
    return _compose_error(["train.batchsize=8"], "compose failed: unknown key 'train.batchsize'",
                          bench.root / "compose-key")


def nonexistent_model(bench):
    (bench.root / "compose-model").mkdir()
    return _compose_error(["model=nonexistent"], "compose failed: no option 'nonexistent' in config group 'model'",
                          bench.root / "compose-model")


# ----- checkpoints from outside (eval) -----


def _eval_project(bench: Bench, name: str, source: dict) -> Path:
    overrides = [f"eval.source.{k}={v}" for k, v in source.items()]
    project = _project(bench, name, overrides)
    (project / "data" / "raw").symlink_to(bench.raw, target_is_directory=True)
    return project


def _malicious(bench: Bench, name: str, kind: str, key: str) -> Seen:
    work = bench.root / f"{name}-file"
    work.mkdir()
    marker, evil = work / "PWNED", work / "evil.pt"
    torch.save({key: Marker(str(marker))}, evil)
    project = _eval_project(bench, name, {"kind": kind, "path": str(evil)})
    seen = stage(project, "eval_retrieval")
    line = seen.one_line_error()
    assert not marker.exists(), "the pickle ran"
    assert "system" in line and "\n" not in line, line
    assert "reports/metrics/eval_retrieval.json" not in seen.files, seen.files
    return Seen(1, line, outcome=f"exit 1, marker file not created: `{line[:170]}...`")


def malicious_checkpoint(bench):
    return _malicious(bench, "evil-checkpoint", "checkpoint", "student")


def malicious_release(bench):
    return _malicious(bench, "evil-release", "cosmos_release", "student")


def malicious_openclip(bench):
    return _malicious(bench, "evil-openclip", "openclip", "state_dict")


def wrong_architecture(bench):
    from cosmos.models import build_model, export_reference_checkpoint

    work = bench.root / "wrong-arch-file"
    work.mkdir()
    small = build_model("cosmos-small").state_dict()
    path = export_reference_checkpoint(work / "small.pt", small, small, epoch=1, name="small")
    project = _eval_project(bench, "wrong-arch", {"kind": "checkpoint", "path": str(path), "model": "cosmos-tiny"})
    seen = stage(project, "eval_retrieval")
    line = seen.one_line_error()
    assert "cosmos-tiny" in line and "shape" in line.lower(), line
    assert "reports/metrics/eval_retrieval.json" not in seen.files
    return Seen(1, line, outcome=f"exit 1: `{line[:170]}...`")


CASES = [
    ("corrupt JPEG (not image bytes)", corrupt_jpeg),
    ("truncated JPEG", truncated_jpeg),
    ("truncated PNG", truncated_png),
    ("raw tar sample without its json", missing_json),
    ("non-UTF-8 caption", non_utf8_caption),
    ("empty caption", empty_caption),
    ("truncated raw tar", truncated_tar),
    ("bad samples above data.shard.max_bad_fraction", too_many_bad),
    ("caption table missing its caption column", caption_table_missing_columns),
    ("training shard: a sample without json, an undecodable jpg", bad_training_samples),
    ("non-finite loss (NaN from the third step, step 2)", non_finite_loss),
    ("malicious pickle as the newest training checkpoint", malicious_resume_checkpoint),
    ("data.sizes.train=0", zero_size),
    ("data.sizes.retrieval=-5", negative_size),
    ("train.batch_size=0", zero_batch),
    ("train.precision=fp16 on CPU", fp16_on_cpu),
    ("unknown key in params.yaml (train.batchsize)", unknown_key_in_params),
    ("unknown key override (train.batchsize=8)", unknown_key_override),
    ("model=nonexistent", nonexistent_model),
    ("malicious pickle, eval.source.kind=checkpoint", malicious_checkpoint),
    ("malicious pickle, eval.source.kind=cosmos_release", malicious_release),
    ("malicious pickle, eval.source.kind=openclip", malicious_openclip),
    ("checkpoint of another architecture (cosmos-small as cosmos-tiny)", wrong_architecture),
]
