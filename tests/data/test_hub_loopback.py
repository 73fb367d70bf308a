"""The two Hugging Face Hub downloads, through the real `huggingface_hub` against a loopback Hub
(:mod:`tests.fake_hub`): `fetch_annotations` fetches exactly the caption tables its patterns name, once, and
fails with a fix when the repo or revision is wrong; `fetch_release` fetches a released checkpoint that loads
with ``weights_only=True``, and fails with one clear line when the file is not on the Hub.

Each fetch runs in a child interpreter whose environment points `huggingface_hub` at the loopback Hub:
it reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE`` and the token once, at import, and torch or
open_clip may already have imported it in this process. The child also drops every inherited ``HF_*``
variable, so neither a token nor offline mode of the machine running the tests changes what is checked.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosmos.io.hub import describe_hub_error, hub_error_hint
from tests.conftest import REPO_ROOT
from tests.fake_hub import FakeHub

DATASET = "qidouxiong619/dreamlip_long_captions"
MODEL = "sankim2/cosmos"
CKPT = "cosmos_vitb16_merged30m.pt"
TABLES = {  # what `*_url.csv` selects; non-ASCII so a decode/re-encode on the way would show
    "cc12m_3long_3short_1raw_captions_url.csv": "Image Path,raw_caption\nhttp://x/1.jpg,un café\n".encode(),
    "cc3m_3long_3short_1raw_captions_url.csv": "Image Path,raw_caption\nhttp://x/2.jpg,a dog\n".encode(),
}
OTHER = {"README.md": b"# long captions\n"}  # listed beside the tables: only the pattern keeps it out
PATTERN = "*_url.csv"

FETCH_ANNOTATIONS = "cosmos.data.download.annotations:fetch_annotations"
FETCH_RELEASE = "cosmos.eval.sources:fetch_release"
_CHILD = """
import importlib, json, sys
module, name = sys.argv[1].split(":")
kwargs = json.loads(sys.argv[2])
if "source" in kwargs:
    from cosmos.data.download.config import SourceConfig
    kwargs["source"] = SourceConfig(**kwargs["source"])
try:
    value = getattr(importlib.import_module(module), name)(**kwargs)
    result = {"value": [str(v) for v in value] if isinstance(value, list) else str(value)}
except Exception as err:
    result = {"error": type(err).__name__, "message": str(err)}
print(json.dumps(result))
"""


def _checkpoint() -> tuple[bytes, dict]:
    """A tiny file in the released layout (student keys with DDP's ``module.`` prefix, teacher without)."""
    state = {"student": {"module.visual.proj": torch.arange(6.0).reshape(2, 3)},
             "teacher": {"visual.proj": torch.full((2, 3), 0.5)}, "epoch": 32}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue(), state


@pytest.fixture
def hub():
    repos = {("dataset", DATASET): TABLES | OTHER, ("model", MODEL): {CKPT: _checkpoint()[0], "README.md": b"#\n"}}
    with FakeHub(repos) as server:
        yield server


def _call(hub: FakeHub, tmp_path: Path, target: str, **kwargs) -> dict:
    """`target(**kwargs)` in a child pointed at `hub`: ``{"value": ...}`` or ``{"error": type, "message"}``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    # NO_PROXY: a proxy set for package registries must not intercept the loopback Hub.
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, target, json.dumps(kwargs)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _fetch_tables(hub: FakeHub, tmp_path: Path, repo: str = DATASET, revision: str = "main") -> dict:
    source = {"format": "dreamlip", "files": [PATTERN], "hf_repo": repo, "hf_revision": revision}
    return _call(hub, tmp_path, FETCH_ANNOTATIONS, source=source, dest=str(tmp_path / "annotations"))


def test_hub_tables_fetched_exactly_once_and_only_those_matching(hub, tmp_path):
    """The matching tables arrive byte for byte, sorted, in `dest`; the other file is never requested; a
    re-run downloads nothing, and after one table is lost only that one is fetched again. All without a
    token, and over plain HTTP (the file bytes come from GET on `resolve`, not from Xet)."""
    dest = (tmp_path / "annotations").resolve()
    got = _fetch_tables(hub, tmp_path)
    assert got == {"value": [str(dest / name) for name in sorted(TABLES)]}
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == TABLES
    assert not (dest / "README.md").exists()
    assert sorted(hub.resolved("GET")) == sorted(TABLES) and sorted(hub.resolved("HEAD")) == sorted(TABLES)
    assert [r.path for r in hub.requests if r.path.startswith("/api/")] == [
        f"/api/datasets/{DATASET}/revision/main", f"/api/datasets/{DATASET}/tree/{hub.commit('dataset', DATASET)}"]
    assert not any(r.authorized for r in hub.requests)

    gets = len(hub.resolved("GET"))
    assert _fetch_tables(hub, tmp_path) == got
    assert len(hub.resolved("GET")) == gets, "a complete table was downloaded again"

    lost = "cc3m_3long_3short_1raw_captions_url.csv"
    (dest / lost).unlink()
    assert _fetch_tables(hub, tmp_path) == got
    assert hub.resolved("GET")[gets:] == [lost]
    assert (dest / lost).read_bytes() == TABLES[lost]


@pytest.mark.parametrize("repo, revision, hub_error", [
    (DATASET, "v2-does-not-exist", "RevisionNotFoundError"),
    ("qidouxiong619/no_such_captions", "main", "RepositoryNotFoundError"),
])
def test_unknown_repo_or_revision_is_an_annotation_error_with_the_fix(hub, tmp_path, repo, revision, hub_error):
    """A wrong `hf_repo` / `hf_revision` stops with AnnotationError naming repo@revision, the Hub's reason and
    the way out (`local_path`), before any file is requested."""
    got = _fetch_tables(hub, tmp_path, repo, revision)
    assert got["error"] == "AnnotationError"
    assert f"the Hugging Face dataset {repo}@{revision}: {hub_error} (HTTP " in got["message"]
    assert "Not Found for url" in got["message"] and "Please make sure" not in got["message"]
    assert "data.sources.<name>.local_path" in got["message"] and "\n" not in got["message"]
    assert hub.resolved("HEAD") == hub.resolved("GET") == []
    assert f"/api/datasets/{repo}/revision/{revision}" in [r.path for r in hub.requests]


@pytest.mark.parametrize("wrong", ["repo", "revision", "unreachable"])
def test_tables_of_an_earlier_fetch_do_not_stand_in_for_a_wrong_source(hub, tmp_path, wrong):
    """After a good fetch into `dest`, a wrong repo, a wrong revision or an unreachable Hub is still an
    error: `snapshot_download` alone would return the earlier tables with a warning, as if they were the
    requested ones."""
    assert "value" in _fetch_tables(hub, tmp_path)
    if wrong == "unreachable":
        hub.stop()
        got = _fetch_tables(hub, tmp_path)
        assert got["error"] == "AnnotationError" and "check the network (HF_ENDPOINT" in got["message"]
        return
    got = (_fetch_tables(hub, tmp_path, "qidouxiong619/typo_captions") if wrong == "repo"
           else _fetch_tables(hub, tmp_path, DATASET, "v0"))
    assert got["error"] == "AnnotationError"
    assert ("check the repo id" if wrong == "repo" else "not a branch, tag or commit") in got["message"]


def test_release_checkpoint_is_fetched_into_cache_dir_and_loads(hub, tmp_path):
    """A bare released file name is downloaded from the model repo into `cache_dir`; the file is the served
    one, byte for byte, and loads with ``weights_only=True`` to the same tensors."""
    data, state = _checkpoint()
    cache = (tmp_path / "hf_cache").resolve()
    got = _call(hub, tmp_path, FETCH_RELEASE, filename=CKPT, repo=MODEL, cache_dir=str(cache))
    path = Path(got["value"])
    assert path.is_relative_to(cache) and path.name == CKPT
    assert path.read_bytes() == data
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert loaded["epoch"] == 32 and loaded.keys() == state.keys()
    for which in ("student", "teacher"):
        assert loaded[which].keys() == state[which].keys()
        assert all(torch.equal(loaded[which][k], v) for k, v in state[which].items())
    assert hub.resolved("GET") == [CKPT] and f"/{MODEL}/resolve/main/{CKPT}" in [r.path for r in hub.requests]


@pytest.mark.parametrize("repo, filename, hub_error", [
    (MODEL, "cosmos_vitb16_yfcc15m.pt", "RemoteEntryNotFoundError"),
    ("sankim2/no-such-repo", CKPT, "RepositoryNotFoundError"),
])
def test_release_not_on_the_hub_is_a_clear_error(hub, tmp_path, repo, filename, hub_error):
    """A file or repo the Hub does not have: RuntimeError "could not fetch", naming file, repo and the Hub's
    error type, in one line, and telling how to go on offline."""
    got = _call(hub, tmp_path, FETCH_RELEASE, filename=filename, repo=repo, cache_dir=str(tmp_path / "hf_cache"))
    assert got["error"] == "RuntimeError"
    message = got["message"]
    assert message.startswith(f"could not fetch {filename} from the Hugging Face repo {repo} ({hub_error} (HTTP ")
    assert "Not Found for url" in message
    assert "download it elsewhere and pass the local path" in message and "\n" not in message
    assert hub.resolved("GET") == []


class RevisionNotFoundError(Exception):
    """Named like the Hub client's class: :mod:`cosmos.io.hub` matches by name."""


class RemoteEntryNotFoundError(Exception):
    pass


class OfflineChild(RemoteEntryNotFoundError):
    pass


def test_hub_errors_are_one_line_with_the_reason_and_the_fix():
    """The client's message: status line, blank line, reason lines, generic advice. Kept: type, status and
    reason; dropped: the advice. Hints come from the class or, for a subclass, its nearest named base."""
    err = RevisionNotFoundError("404 Client Error. (Request ID: Root=1-abc)\n\nRevision Not Found for url: "
                                "http://h/api/datasets/a/b/revision/v2.\nInvalid rev id: v2\nPlease make sure x")
    assert describe_hub_error(err) == ("RevisionNotFoundError (HTTP 404): Revision Not Found for url: "
                                       "http://h/api/datasets/a/b/revision/v2. Invalid rev id: v2")
    assert "not a branch, tag or commit" in hub_error_hint(err)
    assert describe_hub_error(OfflineChild("")) == "OfflineChild"
    assert "not in that repo" in hub_error_hint(OfflineChild(""))
    conn = ConnectionRefusedError("[Errno 111] Connection refused")
    assert describe_hub_error(conn) == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert hub_error_hint(conn).startswith("check the network")
