"""The thin frame every DVC stage script runs in: load params, call the library, fail with one clear line.

Expected failures (bad config, bad data) are `ValueError`/`RuntimeError` subclasses raised with messages
that name the cause and the fix; the frame prints that message instead of a traceback and exits 1, so DVC
records the stage as failed and caches nothing. Set COSMOS_TRACEBACK=1 to see the full traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from cosmos.config.params import load_params


def run_stage(name: str, body: Callable[[dict[str, Any]], None], params_path: str = "params.yaml") -> None:
    """Run `body(params)` as stage `name`; exit 1 with a one-line error on expected failures."""
    try:
        body(load_params(params_path))
    except (ValueError, RuntimeError, FileNotFoundError, KeyError) as err:
        if os.environ.get("COSMOS_TRACEBACK"):
            raise
        kind = type(err).__name__
        print(f"stage {name} failed: {kind}: {err}", file=sys.stderr)
        sys.exit(1)
