"""tunelab: fine-tune language models and prove, with numbers, whether the fine-tune worked."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["train", "check_train", "evaluate", "evaluate_task", "evaluate_adapters", "compare_baselines",
           "evaluate_suite", "score", "format_scores", "quickstart", "sweep", "tune", "merge",
           "combine", "predict", "export", "serve", "data_inspect", "data_check", "data_fetch", "tasks_validate", "tasks_list", "harness", "robustness",
           "bias", "generation_bias", "perturbations_overview", "probes_overview", "compare", "ratings", "rate",
           "build_report", "TunelabError"]

from tunelab.core.errors import TunelabError

# The API, loaded on first use: `import tunelab` (and `tunelab --help`) stays free of torch.
_API = ("train", "check_train", "evaluate", "evaluate_task", "evaluate_adapters", "compare_baselines",
        "evaluate_suite", "score", "format_scores", "quickstart", "sweep", "tune", "merge",
        "combine", "predict", "export", "serve", "data_inspect",
        "data_check", "data_fetch", "tasks_validate", "tasks_list", "harness", "robustness", "bias",
        "generation_bias", "perturbations_overview", "probes_overview", "compare", "ratings", "rate",
        "build_report")

if TYPE_CHECKING:  # pragma: no cover
    from tunelab.api import (
        bias,
        build_report,
        check_train,
        combine,
        compare,
        compare_baselines,
        data_check,
        data_fetch,
        data_inspect,
        evaluate,
        evaluate_adapters,
        evaluate_suite,
        evaluate_task,
        export,
        format_scores,
        generation_bias,
        harness,
        merge,
        perturbations_overview,
        predict,
        probes_overview,
        quickstart,
        rate,
        ratings,
        robustness,
        score,
        serve,
        sweep,
        tasks_list,
        tasks_validate,
        train,
        tune,
    )


def __getattr__(name: str) -> object:
    if name in _API:  # `tunelab X` is `tunelab.X(...)` (`tunelab eval`: evaluate; report: build_report)
        from tunelab import api

        return getattr(api, name)
    raise AttributeError(name)
