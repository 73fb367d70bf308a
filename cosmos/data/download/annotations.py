"""Fetch a source's caption table(s): from the Hugging Face Hub, or from a local folder that holds them."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from cosmos.data.download.config import SourceConfig
from cosmos.io.hub import describe_hub_error, hub_error_hint


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

    With `local_path` the files are used where they lie. Otherwise `hf_revision` of the dataset repo
    `hf_repo` is first resolved to its commit on the Hub, then `huggingface_hub.snapshot_download` fetches
    the files matching `files` at that commit into `dest`, skipping those already complete there (an
    interrupted file starts again). Resolving first is what makes a wrong repo or revision an error even
    when `dest` holds tables of an earlier fetch: `snapshot_download` alone would fall back to them with
    only a warning. A resumed download never gets here: it reuses the tables its url list was built from.
    """
    if source.local_path is not None:
        return _match(Path(source.local_path), source.files)
    try:
        from huggingface_hub import HfApi, snapshot_download

        commit = HfApi().repo_info(repo_id=source.hf_repo, repo_type="dataset", revision=source.hf_revision).sha
        folder = snapshot_download(
            repo_id=source.hf_repo,
            repo_type="dataset",
            revision=commit,
            allow_patterns=list(source.files),
            local_dir=str(dest),
        )
    except Exception as err:  # network, auth, missing repo/revision: one clear line for the stage
        raise AnnotationError(
            f"could not fetch {list(source.files)} from the Hugging Face dataset {source.hf_repo}@"
            f"{source.hf_revision}: {describe_hub_error(err)}. Fix: {hub_error_hint(err)} "
            "(data.sources.<name>.hf_repo / hf_revision), or download the files yourself and set "
            "data.sources.<name>.local_path to their folder."
        ) from err
    return _match(Path(folder), source.files)
