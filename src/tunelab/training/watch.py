"""A run watched at every validation evaluation: a trial of a hyperparameter search.

`tunelab tune` hands `train()` a `ValidationWatch`: its listener hears each validation record
(and may end training, a pruned trial), and with `metric` the task metric is scored on the
validation split at every evaluation. A watched run reads train and validation only: its plan
seals the test split (`data.splits.SealedSplit`), and whatever would score test is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.config import RunConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Splits, TaskData
from tunelab.eval.runner import evaluate_loaded
from tunelab.eval.tasks import TaskItems
from tunelab.models import LoadedModel
from tunelab.runs import System

if TYPE_CHECKING:
    import torch

    from tunelab.training.loop import EvalHook, EvalListener, Trainer

VALIDATION_SCORES = "val_scores"
"""The log record's key of each task's validation scores ({task: {score: value}})."""


@dataclass
class ValidationWatch:
    """What a caller watches while the run trains (a search's trial)."""

    listener: EvalListener
    """Hears each validation record once logged; True ends training like early stopping."""
    metric: bool = False
    """Also score each task's metrics on its validation split at every evaluation (the
    record's `val_scores`)."""

    def attach(self, trainer: Trainer, lm: LoadedModel, tasks: Mapping[str, TaskConfig],
               splits: Mapping[str, Splits], limit: int | None) -> None:
        """Listen to the trainer's validation records (and score `tasks` on validation)."""
        trainer.eval_listeners.append(self.listener)
        if self.metric:
            trainer.eval_hooks.append(validation_metric_hook(lm, tasks, splits, limit))


def check_watched(config: RunConfig, evaluate_after: bool) -> None:
    """A watched run reads no test data: refuse what would score a test split."""
    touching = [option for option, on in (
        ("evaluate_after", evaluate_after), ("retention.tasks", bool(config.retention.tasks)),
        ("robustness.perturbations", bool(config.robustness.perturbations)),
        ("bias.probes", bool(config.bias.probes)), ("bias.bbq", config.bias.bbq)) if on]
    if touching:
        raise TunelabError(f"{touching[0]}: a trial of a search reads the validation split only; "
                           "turn it off (the best trial is scored on test after the search)")


def validation_metric_hook(lm: LoadedModel, tasks: Mapping[str, TaskConfig],
                           splits: Mapping[str, Splits], limit: int | None) -> EvalHook:
    """An eval hook: each task's metrics on its validation split as the plan read it (no
    second read of the data, so a sealed test split stays unread)."""
    items = {name: TaskItems(task, TaskData({"train": splits[name].train,
                                             "validation": splits[name].validation}),
                             splits[name].validation, 0)
             for name, task in tasks.items() if splits[name].validation}

    def hook(model: torch.nn.Module) -> dict[str, dict[str, dict[str, float]]]:
        view = lm.with_model(model)
        return {VALIDATION_SCORES: {
            name: evaluate_loaded(view, task_items.task, System.tuned(), shots=0, limit=limit,
                                  bootstrap=0, items=task_items).scores
            for name, task_items in items.items()}}

    return hook
