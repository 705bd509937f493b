"""Experiment trackers (`train.report_to`): the scalars of train_log.jsonl, through accelerate.

Each tracker is an object that builds accelerate's own tracker for a run directory, so the
loop never asks which one runs. A log record becomes scalars by flattening: nested dicts join
their keys with "/" (`val_loss_by_task/news`), non-numbers are dropped (they stay in
train_log.jsonl).

    tensorboard  RUN/tensorboard/<run name>/events.out.tfevents.*
    mlflow       RUN/mlruns/ (MLflow's file store), or the store $MLFLOW_TRACKING_URI names
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker

from tunelab.runs import RunDir


@dataclass(frozen=True)
class TensorBoard:
    name: str = "tensorboard"

    def build(self, run: RunDir, run_name: str) -> GeneralTracker:
        return TensorBoardTracker(run_name, run.tensorboard)


@dataclass(frozen=True)
class MLflow:
    name: str = "mlflow"

    def build(self, run: RunDir, run_name: str) -> GeneralTracker:
        import mlflow  # optional: tunelab[trackers]

        if "MLFLOW_TRACKING_URI" not in os.environ:
            # The run's own file store: MLflow 3 keeps it in maintenance mode behind an
            # opt-in; a server or sqlite store is one $MLFLOW_TRACKING_URI away.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(run.mlruns.resolve().as_uri())
        return MLflowTracker(experiment_name=run_name, run_name=run_name)


TRACKERS = {t.name: t for t in (TensorBoard(), MLflow())}


def build_trackers(names: Sequence[str], run: RunDir, run_name: str) -> list[GeneralTracker]:
    return [TRACKERS[name].build(run, run_name) for name in names]


def flatten(record: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Leaves of a nested dict, their keys joined by "/"."""
    out: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def scalars(record: Mapping[str, object]) -> dict[str, float]:
    """A log record's finite numbers (the step is the x axis, not a scalar)."""
    return {k: float(v) for k, v in flatten(record).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k != "step"}


def hyperparameters(config: Mapping[str, object]) -> dict[str, int | float | str | bool]:
    """The train config as the scalar parameters trackers store (lists as text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten(config).items() if v is not None}
