"""Where tunelab keeps what it builds once and reuses: the user cache.

One root for every cached thing (converted built-in models, BIG-bench files, retention scores),
so `$TUNELAB_CACHE` moves all of them together.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$TUNELAB_CACHE if set (and not empty), else ~/.cache/tunelab."""
    return Path(os.environ.get("TUNELAB_CACHE") or Path.home() / ".cache" / "tunelab")


def bigbench_dir() -> Path:
    """Where BIG-bench's task files live (extracted by `tunelab data fetch bigbench`)."""
    return cache_root() / "bigbench"
