"""The bad-input corpus: each case writes one broken input into a project folder and runs the stage a user hits.

Nothing here is a binary blob in git: :func:`make_bench` generates a tiny synthetic benchmark once, and each
case copies the part it breaks. A stage runs as the user runs it, ``python stages/<name>.py`` in a project
folder that holds ``params.yaml`` (composed from ``conf/`` with the case's overrides) and ``data/``; the shard,
download and eval stages run in this process (:func:`stage`), the pretrain stage in a child
(``tests.faults.inject``, which can also poison the loss). Every case returns a :class:`Seen`, whose
``outcome`` is the table's cell: the one line the stage printed, or what it counted and skipped.

``tests/data/bad/test_bad_inputs.py`` asserts each case; ``benchmarks/bad_inputs.py`` prints the table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
# The tiny benchmark's 60 training scenes in 3 raw tars, and few enough eval images to load in a second.
BASE = ["profile=debug", "data.root=data", "data.sizes.train=60", "data.sizes.retrieval=12",
        "data.sizes.classification_per_class=1", "data.sizes.segmentation=2", "data.sizes.compositional=4",
        "data.sizes.samples_per_tar=20", "data.shard.samples_per_shard=20", "data.shard.max_bad_fraction=0.1"]
PRETRAIN = ["train.batch_size=8", "train.max_steps=4", "train.checkpoint_every=2", "train.val_every=0",
            "train.log_every=1", "train.device=cpu"]


@dataclass
class Seen:
    """What the stage did: exit status (0: it finished), its stderr, and the files it left in the project."""

    code: int
    stderr: str
    files: list[str] = field(default_factory=list)
    outcome: str = ""

    @property
    def error_lines(self) -> list[str]:
        """The ``stage X failed: ...`` / ``compose failed: ...`` lines the user reads."""
        return [line for line in self.stderr.splitlines() if " failed: " in line]

    def one_line_error(self) -> str:
        """The single error line; raises ``AssertionError`` naming what the user saw instead."""
        assert self.code == 1, f"exit {self.code}, not 1:\n{self.stderr[-3000:]}"
        assert "Traceback" not in self.stderr, f"a traceback reached the user:\n{self.stderr[-3000:]}"
        assert len(self.error_lines) == 1, f"not one error line:\n{self.stderr[-3000:]}"
        return self.error_lines[0]


@dataclass(frozen=True)
class Bench:
    """The generated inputs every case copies from."""

    raw: Path          # a complete synthetic benchmark (all splits), as `download` writes it
    shards: Path       # its training shards, as `shard` writes them
    root: Path         # where case projects go


def compose(overrides: list[str]) -> dict:
    from cosmos.config.compose import compose_params

    return yaml.safe_load(compose_params([*BASE, *overrides]))


def make_bench(root: Path) -> Bench:
    """Generate the benchmark with the BASE sizes and shard it through the real stages."""
    project = new_project(root / "bench", compose([]))
    for name in ("download", "shard"):
        seen = stage(project, name)
        assert seen.code == 0, f"the {name} stage failed on good data:\n{seen.stderr[-3000:]}"
    return Bench(raw=project / "data" / "raw", shards=project / "data" / "shards", root=root)


def new_project(dst: Path, params: dict) -> Path:
    dst.mkdir(parents=True)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (dst / "data").mkdir()
    return dst


def files(project: Path) -> list[str]:
    """Every file under the project but its inputs (``params.yaml``, ``data/raw``), relative, sorted."""
    out = []
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and rel != "params.yaml" and not rel.startswith("data/raw/"):
            out.append(rel)
    return out


def stage(project: Path, name: str) -> Seen:
    """``python stages/<name>.py`` in ``project``, in this process (its ``sys.exit`` becomes the code)."""
    err = io.StringIO()
    code = 0
    with contextlib.chdir(project), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path(str(REPO_ROOT / "stages" / f"{name}.py"), run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if not isinstance(exit_.code, int | None):
                err.write(f"{exit_.code}\n")
        except Exception:  # escaped the stage's error handling: the user would see this traceback
            code = 2
            err.write(traceback.format_exc())
    return Seen(code, err.getvalue(), files(project))


def child_stage(project: Path, fault: str = "none", env: dict[str, str] | None = None, name: str = "pretrain",
                ) -> Seen:
    """The stage in a child process (``pretrain`` through ``tests.faults.inject``, so a fault can be armed)."""
    cmd = [sys.executable, "-m", "tests.faults.inject", fault] if name == "pretrain" else \
        [sys.executable, str(REPO_ROOT / "stages" / f"{name}.py")]
    env = {**os.environ, **(env or {}), "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    return Seen(proc.returncode, proc.stderr, files(project))


def metrics(project: Path, name: str) -> dict:
    return json.loads((project / "reports" / "metrics" / f"{name}.json").read_text(encoding="utf-8"))


# ----- raw data (the shard stage) -----


def raw_copy(bench: Bench, project: Path) -> Path:
    """The benchmark's raw pretrain folder copied into the project; returns its ``pretrain`` folder."""
    dst = project / "data" / "raw" / "pretrain"
    shutil.copytree(bench.raw / "pretrain", dst)
    return dst


def rewrite_tar(tar_path: Path, edit) -> None:
    """Rewrite ``tar_path`` with ``edit(name, data)`` applied to each member: new ``(name, data)`` or None to drop."""
    with tarfile.open(tar_path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]
    with tarfile.open(tar_path, "w") as tf:
        for name, data in members:
            changed = edit(name, data)
            if changed is None:
                continue
            info = tarfile.TarInfo(changed[0])
            info.size = len(changed[1])
            tf.addfile(info, io.BytesIO(changed[1]))


def first_tar(pretrain: Path) -> Path:
    return sorted((pretrain / "images").glob("*.tar"))[0]


def png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def edit_captions(pretrain: Path, key: str, value: bytes) -> None:
    """Set the long caption of the sample ``key`` to the raw bytes ``value`` in ``annotations.csv``."""
    table = pretrain / "annotations.csv"
    rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8"))))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    marker = "\x00CAPTION\x00"
    for row in rows:
        if row["Image Path"].endswith(f"/{key}.jpg"):
            row["longIB_captions"] = marker
        writer.writerow(row)
    table.write_bytes(out.getvalue().encode("utf-8").replace(marker.encode("utf-8"), value))
