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


OFF_VALUES = ("0", "off", "false", "no")


def results_store() -> Path | None:
    """The SQLite file that keeps evaluation results (eval/result_cache.py) and the weights
    each model recipe loads (models/known_weights.py), or None where `TUNELAB_EVAL_CACHE`
    turns both off."""
    if os.environ.get("TUNELAB_EVAL_CACHE", "").strip().lower() in OFF_VALUES:
        return None
    return cache_root() / "eval-results.sqlite"
