"""Process-level settings that make CPU training steps cheaper without touching the math.

glibc returns freed memory at the top of the heap to the kernel (``M_TRIM_THRESHOLD``, dynamic by default)
and serves blocks above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with fresh ``mmap`` calls that it unmaps on
free. A training step allocates and frees the same activation-sized blocks every step (a ViT MLP hidden at
224 px is 19 MiB in fp32; the token-embedding gradient is 50 MiB), so each step page-faults all of them
again: on the 2-core benchmark machine that was a fifth of the bf16 step (docs/training.md).
:func:`tune_malloc` keeps freed memory in the process (no trimming, no mmap for large blocks), the effect
of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` set before start-up, applied at run time through
``mallopt``. The cost is that the process keeps its peak heap until it exits, which a training process
does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied = False


def tune_malloc(top_pad: int = 256 << 20) -> bool:
    """Keep freed heap memory for reuse (glibc only); True if applied, False where there is no glibc."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in
             ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, top_pad)))
    _applied = ok
    return ok
