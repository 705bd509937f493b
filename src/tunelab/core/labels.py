"""Label text, compared the way the label metrics compare it.

A bottom-layer module because two layers need the same rule: the classifier kind maps a
record's output to its class index with it (models/kinds.py), and the label metrics score
predictions with it (eval/metrics_label.py), so "Positive." is the label "positive" in both.
"""

from __future__ import annotations

import string


def normalize_label(text: str) -> str:
    """Strip whitespace and trailing punctuation, then lowercase: " Positive.\\n" -> "positive"."""
    return text.strip().rstrip(string.punctuation).strip().lower()
