"""Freed memory goes back to the operating system (glibc on Linux).

glibc serves allocations above its mmap threshold with their own mappings, returned to the
system when freed, and smaller ones from its heap. The threshold starts at 128 KiB and grows
(up to 32 MiB) each time a mapped block is freed, so after the first training step most
activation tensors (a few MiB each) come from the heap; a heap fragments and keeps what it
freed. Measured on the built-in model (LoRA, 8 x 512 tokens, 2 steps): 15.5 GB peak RSS with
the growing threshold, 6.3 GB with it held at 128 KiB. Held, every large tensor is a fresh
mapping whose pages the kernel zeroes on first touch, which costs time: the quickstart's LoRA
steps ran at 90 instead of 133 tokens/s (benchmarks/train_speed.py). So it is a choice:
TUNELAB_MALLOC=lean holds the threshold (mallopt M_MMAP_THRESHOLD, which also stops the growth)
for the least memory; unset (or anything else), glibc's default is kept for speed. Elsewhere
than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number (malloc.h)."""
THRESHOLD = 128 * 1024

_done: list[bool] = []


def keep_mmap_threshold() -> bool:
    """With TUNELAB_MALLOC=lean, hold glibc's mmap threshold at 128 KiB for this process
    (once); whether it is held."""
    if _done:
        return _done[0]
    held = False
    if sys.platform.startswith("linux") and os.environ.get("TUNELAB_MALLOC") == "lean":
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name or "libc.so.6")
            held = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
        except (OSError, AttributeError):  # not glibc (musl has no mallopt)
            held = False
    _done.append(held)
    return held
