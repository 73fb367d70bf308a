"""Fetch a source's caption table(s): from the Hugging Face Hub, or from a local folder that holds them."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from cosmos.data.download.config import SourceConfig


class AnnotationError(RuntimeError):
    """A caption table that cannot be found or fetched."""


def _match(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    files = [p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                    p.relative_to(root).parts)]
    hits = sorted({p for p in files for pat in patterns if fnmatch.fnmatch(p.relative_to(root).as_posix(), pat)})
    missing = [pat for pat in patterns
               if not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), pat) for p in files)]
    if missing:
        raise AnnotationError(f"{root}: no file matches {missing} (data.sources.<name>.files)")
    return hits


def fetch_annotations(source: SourceConfig, dest: str | Path) -> list[Path]:
    """The caption tables of `source`, in a fixed (sorted) order.

    With `local_path` the files are used where they lie. Otherwise `huggingface_hub.snapshot_download`
    fetches the files matching `files` from the dataset repo `hf_repo` at `hf_revision` into `dest`; it
    skips files already complete there and resumes partial ones, so a re-run costs nothing.
    """
    if source.local_path is not None:
        return _match(Path(source.local_path), source.files)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            repo_id=source.hf_repo,
            repo_type="dataset",
            revision=source.hf_revision,
            allow_patterns=list(source.files),
            local_dir=str(dest),
        )
    except Exception as err:  # network, auth, missing repo/revision: one clear line for the stage
        raise AnnotationError(
            f"could not fetch {list(source.files)} from the Hugging Face dataset {source.hf_repo}@"
            f"{source.hf_revision}: {type(err).__name__}: {err}. Check the network (HF_ENDPOINT, HF_TOKEN), "
            "or download the files yourself and set data.sources.<name>.local_path to their folder."
        ) from err
    return _match(Path(folder), source.files)
