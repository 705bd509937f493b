"""The Python API, one module per family of commands; the CLI (cli/) is a thin layer over
these functions, and `tunelab.X` names them all (tunelab/__init__.py).

- eval_commands: `tunelab eval` (`evaluate`: one task, a suite, several runs, baselines;
  `evaluate_task`, `evaluate_adapters`, `compare_baselines`, `evaluate_suite`), `harness`,
  `tasks validate` / `tasks list`
- train_commands: `train`, `check_train`, `quickstart`, `sweep`, `tune`, `report`
- study_commands: `robustness`, `bias` (`generation_bias`), `compare`, `ratings`, `rate`
- data_commands: `data inspect`, `data check`, `data fetch`
- deploy_commands: `merge`, `combine`, `predict`, `export`, `serve`
"""

from __future__ import annotations

from tunelab.api.data_commands import data_check, data_fetch, data_inspect
from tunelab.api.deploy_commands import combine, export, merge, predict, serve
from tunelab.api.eval_commands import (
    Printout,
    check_eval_args,
    compare_baselines,
    evaluate,
    evaluate_adapters,
    evaluate_suite,
    evaluate_task,
    harness,
    tasks_list,
    tasks_validate,
)
from tunelab.api.study_commands import (
    bias,
    compare,
    generation_bias,
    perturbations_overview,
    probes_overview,
    rate,
    ratings,
    robustness,
)
from tunelab.api.train_commands import build_report, quickstart, sweep, tune
from tunelab.eval.scoring import format_scores, score
from tunelab.eval.tasks import task_of
from tunelab.workflows.train import TrainResult, check_train, run_task, train

__all__ = ["train", "check_train", "run_task", "evaluate", "evaluate_task", "evaluate_adapters",
           "compare_baselines", "evaluate_suite", "Printout", "score", "format_scores",
           "quickstart", "data_inspect", "data_check", "tasks_validate", "tasks_list", "data_fetch",
           "merge", "combine", "predict", "export", "serve", "sweep", "tune", "harness",
           "robustness", "bias", "generation_bias", "task_of", "perturbations_overview",
           "probes_overview", "compare", "ratings", "rate", "build_report", "TrainResult",
           "check_eval_args"]
