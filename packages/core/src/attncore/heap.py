"""Hand the heap's freed pages back to the operating system.

A CPU training step allocates and frees gigabytes of tensors of varying sizes. glibc keeps freed pages
in its heap, where the next steps' allocations fragment them, so resident memory grows step after step
(the testbed recipe's training process: 17.0 GB after 200 steps, S13). Trimming bounds that growth, but
the next step faults the pages in again: trimmed after every step, the recipe trained about 20% slower
(S14 in experiments/testbed/RESULTS.md), so trainers trim only when asked (`training.trim_heap_every`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to trim this way
        return None


def trim_heap() -> bool:
    """Release the free pages of every heap arena (glibc `malloc_trim(0)`); False where the C library
    has no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
