"""Trimming the heap returns freed, fragmented pages to the OS (Linux with glibc)."""

from __future__ import annotations

import os
import sys

import pytest

from attncore.heap import trim_heap


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_trim_returns_pages_freed_below_a_live_allocation():
    """256 MiB in 64 KiB blocks (below glibc's mmap threshold, so on the heap), then a block kept alive
    above them: freeing the blocks leaves their pages resident until the heap is trimmed."""
    trim_heap()
    blocks = [bytearray(64 * 1024) for _ in range(4096)]
    pin = bytearray(64 * 1024)
    del blocks
    before = resident_bytes()
    assert trim_heap() is True
    released = before - resident_bytes()
    assert released > 128 * 2**20, f"released {released / 2**20:.0f} MiB of 256"
    assert len(pin) == 64 * 1024
