"""Errors of the Hugging Face Hub client, as one line a stage can print, with the fix.

`huggingface_hub` raises multi-line messages whose first line is only the HTTP status ("404 Client
Error."); the reason ("Revision Not Found for url: ...", "Invalid rev id: v2") comes after a blank line,
followed by generic advice. Both Hub downloads of the project (caption tables, released checkpoints) report
failures through :func:`describe_hub_error` and :func:`hub_error_hint`. The exception classes are matched
by name, so this module needs no `huggingface_hub` import and stays valid across its renames
(`EntryNotFoundError` became `RemoteEntryNotFoundError`).
"""

from __future__ import annotations

import re

_STATUS = re.compile(r"^(\d{3}) (?:Client|Server) Error")
_GENERIC = ("Please make sure", "If you are trying", "For more details")
_HINTS = {
    "RevisionNotFoundError": "the revision is not a branch, tag or commit of that repo: check it",
    "RepositoryNotFoundError": "check the repo id; a private or gated repo also needs HF_TOKEN with access",
    "GatedRepoError": "accept the repo's terms on the Hub and set HF_TOKEN",
    "RemoteEntryNotFoundError": "the file is not in that repo at that revision: check its name",
    "EntryNotFoundError": "the file is not in that repo at that revision: check its name",
}
_NETWORK_HINT = "check the network (HF_ENDPOINT, proxy, HF_HUB_OFFLINE)"


def describe_hub_error(err: BaseException) -> str:
    """`err` in one line: ``Type (HTTP status): the Hub's reason``, without the client's generic advice."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    status = _STATUS.match(lines[0]) if lines else None
    if status:
        lines = lines[1:]
    reason = " ".join(line for line in lines[:3] if not line.startswith(_GENERIC))
    label = f"{type(err).__name__} (HTTP {status.group(1)})" if status else type(err).__name__
    return f"{label}: {reason}" if reason else label


def hub_error_hint(err: BaseException) -> str:
    """What to do about `err`: the hint of the first class in its MRO that the Hub client names, else the
    network (a connection error, a timeout, offline mode)."""
    for cls in type(err).__mro__:
        if cls.__name__ in _HINTS:
            return _HINTS[cls.__name__]
    return _NETWORK_HINT
