"""Shared pieces of the evaluation tests (test_eval_*.py)."""

from __future__ import annotations

from pathlib import Path

from tunelab.config import DataConfig

DATA = Path(__file__).parent / "data"
EVAL_DATA = DATA / "eval"

REVIEWS = DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                     template="format", prompt_format="Review: {input}\nSentiment:",
                     completion_format=" {output}", test_size=8, validation_size=0)
"""The movie-review sentences as a labelled task's data (8 test items, no validation)."""
