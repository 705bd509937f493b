"""Where tunelab keeps what it builds once and reuses: the user cache.

One root for every cached thing (converted built-in models, BIG-bench files, retention scores),
so `$TUNELAB_CACHE` moves all of them together.
"""

from __future__ import annotations

import os
import sqlite3
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


def open_store(path: Path, *tables: str) -> sqlite3.Connection:
    """A connection to the SQLite file `path` (created with its folder where missing) in WAL
    mode, so that processes read while one writes, with each of `tables` (`name (columns)`)
    created where missing; a writer waits up to two minutes for another's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=120)
    connection.execute("PRAGMA journal_mode=WAL")
    for table in tables:
        connection.execute(f"CREATE TABLE IF NOT EXISTS {table}")
    return connection
