"""The Python API of `tunelab quickstart`, `sweep`, `tune` and `report`: one function per
command, which the CLI calls (`train` and `check_train` are workflows/train.py's own)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.api.eval_commands import check_eval_args
from tunelab.core.deferred import deferred
from tunelab.workflows.sweep import SweepOptions
from tunelab.workflows.sweep import run_sweep as run_sweep_options

if TYPE_CHECKING:
    from tunelab.report import run_page
    from tunelab.workflows import quickstart as quickstarting
    from tunelab.workflows import tune as tuning
    from tunelab.workflows.tune import ObjectiveName, Pruner, Sampler
else:  # loaded by the command that uses them: `tunelab tasks list` needs none
    run_page = deferred("tunelab.report.run_page")
    quickstarting = deferred("tunelab.workflows.quickstart")
    tuning = deferred("tunelab.workflows.tune")


def quickstart(out_dir: str | Path = "runs", limit: int | None = None,
               overrides: list[str] | None = None, echo: Callable[[str], object] = print) -> Path:
    """Fine-tune the built-in model with LoRA on the built-in sentiment task and compare it
    with its own zero- and few-shot baselines. Returns the run directory."""
    check_eval_args(0, limit)

    return quickstarting.run_quickstart(Path(out_dir), limit=limit, overrides=overrides, echo=echo)


def sweep(config: str | Path, overrides: list[str], methods: list[str], max_steps: int = 0,
          max_seconds: float = 0, lr: dict[str, float] | None = None, resume: bool = False,
          retention: list[str] | None = None) -> Path:
    """`tunelab sweep`: every method on the same data and budget; returns the sweep directory."""
    options = SweepOptions(methods=methods, max_steps=max_steps, max_seconds=max_seconds,
                           lr=lr or {}, resume=resume, retention=retention)
    sweep_dir = run_sweep_options(str(config), overrides, options)
    run_page.write_html_report(sweep_dir)
    return sweep_dir


def tune(config: str | Path, overrides: list[str] | None = None, *, space: str | Path,
         trials: int, timeout: float = 0, workers: int = 1, storage: str | None = None,
         sampler: Sampler = "tpe", pruner: Pruner = "median", objective: ObjectiveName = "loss",
         baselines: Sequence[str] = ("zero", "few"), worker: int | None = None) -> Path:
    """`tunelab tune`: a hyperparameter search over the config keys in `space` (Optuna),
    every trial scored on the validation split only; then the best trial on test, once, next
    to the base model's baselines. Returns the tune directory (tune.json, report.html).

    Args:
        space: a YAML file of config keys -> lists or {low, high[, log, step]} ranges.
        trials: finished (complete or pruned) trials in total, over every process.
        timeout: seconds after which no new trial starts (0: none).
        workers: worker processes on the same study.
        storage: the study's database URL (default: sqlite:///<tune dir>/study.sqlite).
        objective: loss (best validation loss) or metric (the task's primary metric).
        worker: set by the worker processes `workers` starts (trials only).
    """
    options = tuning.TuneOptions(space=str(space), trials=trials, timeout=timeout, workers=workers,
                          storage=storage, sampler=sampler, pruner=pruner, objective=objective,
                          baselines=list(baselines), worker=worker)
    return tuning.run_tune(str(config), list(overrides or []), options)


def build_report(directory: str | Path) -> Path:
    """`tunelab report DIR`: rebuild DIR/report.html (a run, a sweep, a tune or an eval
    directory)."""
    return run_page.write_html_report(directory)
