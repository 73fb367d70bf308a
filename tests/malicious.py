"""A pickle payload for the safe-loading tests: unpickling it would create a marker file.

Every loader of an outside checkpoint must refuse it (``torch.load(weights_only=True)``) before any of it
runs, so the tests assert that the marker file was never created.
"""

from __future__ import annotations


class Marker:
    """``__reduce__`` runs ``touch <marker>`` on unpickling: the refusal must come before any of it runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
