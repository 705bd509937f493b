"""tunelab: fine-tune language models and prove, with numbers, whether the fine-tune worked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "score", "format_scores", "quickstart", "TunelabError"]

from tunelab.errors import TunelabError

if TYPE_CHECKING:  # pragma: no cover
    from tunelab.api import evaluate, format_scores, quickstart, score, train


def __getattr__(name: str) -> Any:
    # Heavy imports (torch, transformers) only when the API is used.
    if name in ("train", "evaluate", "score", "format_scores", "quickstart"):
        from tunelab import api

        return getattr(api, name)
    raise AttributeError(name)
