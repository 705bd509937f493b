"""tunelab: fine-tune language models and prove, with numbers, whether the fine-tune worked."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "evaluate_adapters", "compare_baselines", "evaluate_suite",
           "score", "format_scores", "quickstart", "run_evaluation", "run_sweep", "merge_run",
           "inspect_data", "validate_task", "tasks_overview", "fetch_bigbench", "harness",
           "check_robustness", "check_bias", "perturbations_overview", "probes_overview",
           "compare_runs", "human_ratings", "rating_server", "build_report", "TunelabError"]

from tunelab.core.errors import TunelabError

# The API, loaded on first use: `import tunelab` (and `tunelab --help`) stays free of torch.
_API = ("train", "evaluate", "evaluate_adapters", "compare_baselines", "evaluate_suite", "score",
        "format_scores", "quickstart", "run_evaluation", "run_sweep", "merge_run", "inspect_data",
        "validate_task", "tasks_overview", "fetch_bigbench", "harness", "check_robustness",
        "check_bias", "perturbations_overview", "probes_overview", "compare_runs", "human_ratings",
        "rating_server", "build_report")

if TYPE_CHECKING:  # pragma: no cover
    from tunelab.api import (
        build_report,
        check_bias,
        check_robustness,
        compare_baselines,
        compare_runs,
        evaluate,
        evaluate_adapters,
        evaluate_suite,
        fetch_bigbench,
        format_scores,
        harness,
        human_ratings,
        inspect_data,
        merge_run,
        perturbations_overview,
        probes_overview,
        quickstart,
        rating_server,
        run_evaluation,
        run_sweep,
        score,
        tasks_overview,
        train,
        validate_task,
    )


def __getattr__(name: str) -> object:
    if name in _API:  # names that are not submodules (tunelab.workflows.sweep, tunelab.runs.merge are)
        from tunelab import api

        return getattr(api, name)
    raise AttributeError(name)
