"""tunelab: fine-tune language models and prove, with numbers, whether the fine-tune worked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "evaluate_adapters", "compare_baselines", "evaluate_suite",
           "score", "format_scores", "quickstart", "run_evaluation", "sweep", "merge", "TunelabError"]

from tunelab.errors import TunelabError

if TYPE_CHECKING:  # pragma: no cover
    from tunelab.api import (
        compare_baselines,
        evaluate,
        evaluate_adapters,
        evaluate_suite,
        format_scores,
        quickstart,
        run_evaluation,
        score,
        train,
    )
    from tunelab.merge import merge_run as merge
    from tunelab.sweep import run_sweep as sweep


def __getattr__(name: str) -> Any:
    # Heavy imports (torch, transformers) only when the API is used.
    if name in ("train", "evaluate", "evaluate_adapters", "compare_baselines", "evaluate_suite",
                "score", "format_scores", "quickstart", "run_evaluation"):
        from tunelab import api

        return getattr(api, name)
    if name == "sweep":
        from tunelab.sweep import run_sweep

        return run_sweep
    if name == "merge":
        from tunelab.merge import merge_run

        return merge_run
    raise AttributeError(name)
