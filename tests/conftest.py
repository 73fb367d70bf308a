"""Shared fixtures. Everything runs on CPU, single process, on data the tests generate themselves."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

from cosmos.data.shard import shard_dataset
from cosmos.data.synthetic.generate import SplitSizes, write_synthetic_benchmark
from cosmos.data.synthetic.scene import SceneConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str) -> ModuleType:
    """A script of the repository (``benchmarks/*.py``, ``stages/*.py``: not importable packages) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_SIZES = SplitSizes(
    train=60, retrieval=12, classification_per_class=2, segmentation=10, compositional=12, samples_per_tar=25
)


@pytest.fixture(scope="session")
def scene_cfg() -> SceneConfig:
    return SceneConfig()


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory, scene_cfg) -> Path:
    """A complete tiny synthetic benchmark (all splits), generated once per session."""
    out = tmp_path_factory.mktemp("bench") / "raw"
    write_synthetic_benchmark(out, seed=7, scene=scene_cfg, sizes=TINY_SIZES)
    return out


@pytest.fixture(scope="session")
def debug_pipeline(tmp_path_factory):
    """One `dvc repro` of the debug profile in a scratch repository, shared by the end-to-end tests."""
    from tests.pipeline_repo import debug_pipeline as run

    return run(tmp_path_factory.mktemp("debug-pipeline"))


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, tiny_raw) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    shard_dataset(tiny_raw / "pretrain" / "images", tiny_raw / "pretrain" / "annotations.csv", out,
                  samples_per_shard=20)
    return out


@pytest.fixture(autouse=True)
def _torch_threads_restored(request):
    """Every test starts with the suite's torch thread count, whatever the test before it set.

    Bit-exact comparisons between a subprocess and this process need the same count on both sides (CPU
    kernels split reductions by thread); a test that pins the count in-process and never restores it would
    otherwise change the arithmetic of every test after it. A leak is named, then undone.
    """
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        warnings.warn(f"{request.node.nodeid} left torch at {torch.get_num_threads()} threads (was {threads}); "
                      "restored", stacklevel=1)
        torch.set_num_threads(threads)
