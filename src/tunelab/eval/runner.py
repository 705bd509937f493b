"""Evaluate one model (base, fine-tuned, or base + adapter) on one task, zero- or few-shot.

Requests (generation, log-likelihoods, a task head) are separate from scoring: predictions
are made once by the output type's runner (outputs.py), then every metric scores them per
item and aggregates, with bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tunelab.eval.metrics_lm  # noqa: F401  (registers multiple_choice, bits_per_byte, ...)
from tunelab.config import TaskConfig
from tunelab.errors import TunelabError
from tunelab.eval.datasets import load_task_data
from tunelab.eval.metrics import bootstrap_ci, get_metric
from tunelab.eval.outputs import RUNNERS, Outputs, Request, context_limit, warn_dropped
from tunelab.models import LoadedModel

__all__ = ["EvalResult", "context_limit", "evaluate_loaded", "score_outputs", "write_result"]


@dataclass
class EvalResult:
    task: str
    system: str
    """Which system produced the predictions, e.g. 'base 0-shot' or 'fine-tuned'."""
    shots: int
    n: int
    scores: dict[str, float]
    ci: dict[str, list[float]]
    signatures: dict[str, str]
    mean_context_tokens: float
    """Mean prompt length in tokens (shots included)."""
    dropped_shots: int = 0
    """In-context examples dropped because they would overflow the context window."""
    seconds: float = 0.0
    predictions: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, list[Any]] = field(default_factory=dict, repr=False)
    """Per-item metric values, kept for paired significance tests."""
    output_type: str = "generate"
    mean_shot_tokens: float = 0.0
    """Mean tokens the in-context examples take per prompt."""
    truncated: int = 0
    """Prompts cut from the left because even without shots they overflowed the context."""

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        data.pop("items")
        return data


def metric_options(task: TaskConfig, name: str) -> dict[str, Any]:
    return {"labels": task.eval.labels} if name == "classification" and task.eval.labels else {}


def evaluate_loaded(
    lm: LoadedModel,
    task: TaskConfig,
    system: str,
    shots: int | None = None,
    limit: int | None = None,
    bootstrap: int | None = None,
) -> EvalResult:
    """Score `lm` on the task's split; predictions are kept per example.

    Args:
        shots: in-context examples per prompt (default 0; the task's few-shot setting is
            `task.fewshot_k()`).
        limit: score the first N items of the split.
        bootstrap: resamples for confidence intervals (default: eval.bootstrap; 0: none).
    """
    from tunelab.eval.tasks import check_task

    check_task(task)
    start = time.perf_counter()
    data = load_task_data(task)
    records = data.split(task.split)
    if not records:
        raise TunelabError(f"task {task.name}: the {task.split} split is empty; check its data sizes")
    records = records[:limit] if limit else records
    k = shots or 0
    if k and task.output_type in ("loglikelihood_rolling", "classification"):
        raise TunelabError(f"--shots {k}: output_type {task.output_type} takes no in-context "
                           "examples; use --shots 0")
    pool = data.split(task.shot_split(), "fewshot.split") if k else []
    outputs = RUNNERS[task.output_type](Request(lm, task, data, records, pool, k, system))
    warn_dropped(task, outputs, lm)
    n_boot = task.eval.bootstrap if bootstrap is None else bootstrap
    scores, cis, signatures, items = score_outputs(task, outputs, n_boot)
    return EvalResult(
        task=task.name, system=system, shots=k, n=len(records), scores=scores, ci=cis,
        signatures=signatures,
        mean_context_tokens=sum(outputs.context_tokens) / max(len(outputs.context_tokens), 1),
        dropped_shots=outputs.dropped_shots, seconds=time.perf_counter() - start,
        predictions=outputs.rows, items=items, output_type=task.output_type,
        mean_shot_tokens=sum(outputs.shot_tokens) / max(len(outputs.shot_tokens), 1),
        truncated=outputs.truncated,
    )


def score_outputs(
    task: TaskConfig, outputs: Outputs, bootstrap: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, str], dict[str, list[Any]]]:
    """(scores, confidence intervals, signatures, per-item values) of every task metric."""
    scores: dict[str, float] = {}
    cis: dict[str, list[float]] = {}
    signatures: dict[str, str] = {}
    items_by_metric: dict[str, list[Any]] = {}
    for name in task.eval.metrics:
        metric = get_metric(name, **metric_options(task, name))
        if name in outputs.metric_args:
            items = [metric.item(*args) for args in outputs.metric_args[name]]
        else:
            items = [metric.item(p, r)
                     for p, r in zip(outputs.predictions, outputs.references, strict=True)]
        items_by_metric[name] = items
        scores.update(metric.aggregate(items))
        if bootstrap:
            cis.update({k: list(v) for k, v in bootstrap_ci(items, metric, n=bootstrap).items()})
        signatures[name] = metric.signature()
        for row, item in zip(outputs.rows, items, strict=True):
            row.setdefault("items", {})[name] = item
    return scores, cis, signatures, items_by_metric


def write_result(result: EvalResult, out_dir: Path) -> None:
    """metrics.json (aggregates, CIs, signatures) + predictions.jsonl (per example)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result.summary(), indent=1, default=str))
    with (out_dir / "predictions.jsonl").open("w") as handle:
        for row in result.predictions:
            handle.write(json.dumps(row, default=str) + "\n")
