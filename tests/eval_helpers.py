"""Shared pieces of the evaluation tests (test_eval_*.py)."""

from __future__ import annotations

from pathlib import Path

EVAL_DATA = Path(__file__).parent / "data" / "eval"


