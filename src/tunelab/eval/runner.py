"""Evaluate one model (base, fine-tuned, or base + adapter) on one task, zero- or few-shot.

Requests (generation, log-likelihoods, a task head) are separate from scoring: predictions
are made once by the task's output type (eval/output_types/), then every metric scores them
per item and aggregates, with bootstrap confidence intervals. `evaluate_records` scores any
list of records (a task's split, or a transformed copy of it: a probe is a Record -> Record
function in front of it); `evaluate_loaded` reads the task's split and calls it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tunelab.config import TaskConfig, to_dict
from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.eval.harm import HarmRates, harm_flags
from tunelab.eval.metrics import bootstrap_ci, task_metrics
from tunelab.eval.output_types import (
    Framing,
    Outputs,
    Request,
    context_limit,
    get_output_type,
    warn_dropped,
)
from tunelab.eval.processes import run_request, run_requests
from tunelab.eval.result_cache import ResultCache
from tunelab.eval.shard import Shard
from tunelab.eval.tasks import TaskItems, check_task, read_task
from tunelab.models import LoadedModel
from tunelab.runs import EvalDir, System

BASE = System.base()

PredictionRow = dict[str, Any]  # Any: JSON values whose fields vary by output type
"""One item of predictions.jsonl: index, input, reference, prediction, items (per-metric
values) and what the output type adds (choices, hit_max_new_tokens, ...)."""

__all__ = ["EvalResult", "context_limit", "evaluate_loaded", "evaluate_records", "evaluate_shared",
           "evaluate_versions", "score_harm", "score_outputs", "write_result"]


@dataclass
class EvalResult:
    task: str
    system: System
    """Which system produced the predictions (its label: 'base 0-shot', 'fine-tuned')."""
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
    predictions: list[PredictionRow] = field(default_factory=list)
    items: dict[str, list[Any]] = field(default_factory=dict, repr=False)  # Any: Metric.item's
    """Per-item metric values, kept for paired significance tests."""
    output_type: str = "generate"
    mean_shot_tokens: float = 0.0
    """Mean tokens the in-context examples take per prompt."""
    truncated: int = 0
    """Prompts cut from the left because even without shots they overflowed the context."""
    harm: HarmRates | None = None
    """The share of predictions flagged offensive / hurtful (eval/harm.py): free text only."""

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("predictions")
        data.pop("items")
        data["system"] = self.system.label
        data["system_id"] = self.system.to_json()
        data["harm"] = self.harm.to_json() if self.harm else None
        return data


def evaluate_records(
    lm: LoadedModel,
    task: TaskConfig,
    records: Sequence[Record],
    shots: int = 0,
    pool: Sequence[Record] = (),
    system: System = BASE,
    framing: Framing | None = None,
    bootstrap: int | None = None,
) -> EvalResult:
    """Score `lm` on `records` as the task's output type and metrics would (no data is read).

    Args:
        shots: in-context examples per prompt, drawn from `pool`.
        framing: preamble and shot separator (default: the task's own, `Framing.of(task)`;
            `evaluate_loaded` passes the data source's).
        bootstrap: resamples for confidence intervals (default: eval.bootstrap; 0: none).
    """
    start = time.perf_counter()
    outputs = _outputs(lm, task, list(records), shots, pool, system, framing, 0)
    return _result(lm, task, len(records), outputs, shots, system, bootstrap, start)


def evaluate_versions(
    lm: LoadedModel,
    task: TaskConfig,
    versions: Sequence[Sequence[Record]],
    shots: int = 0,
    pool: Sequence[Record] = (),
    system: System = BASE,
    framing: Framing | None = None,
) -> list[EvalResult]:
    """`evaluate_records` of each version of the same items (a study's perturbed or
    counterfactual copies), with the model run once over all of them where the output type
    can (one generation call: longer batches of similar length, a prompt repeated across
    versions run once). Each version's result is what `evaluate_records` gives it (its items
    indexed from 0, its own shots); each takes an equal share of the wall time."""
    start = time.perf_counter()
    output_type = get_output_type(task.output_type)
    output_type.check_shots(shots)
    framing = framing or Framing.of(task)
    requests = [Request(lm, task, list(records), list(pool), shots, system.label, framing)
                for records in versions]
    every = run_requests(output_type, requests)
    share = (time.perf_counter() - start) / max(len(versions), 1)
    return [_result(lm, task, len(records), outputs, shots, system, None,
                    time.perf_counter() - share)
            for records, outputs in zip(versions, every, strict=True)]


def _outputs(lm: LoadedModel, task: TaskConfig, records: list[Record], shots: int,
             pool: Sequence[Record], system: System, framing: Framing | None, first: int,
             cached: bool = True) -> Outputs:
    """The output type's outputs for `records`, the first of which is split item `first`
    (`cached`: looked up in the result cache where they are there)."""
    output_type = get_output_type(task.output_type)
    output_type.check_shots(shots)
    request = Request(lm, task, records, list(pool), shots, system.label,
                      framing or Framing.of(task), first_index=first,
                      results=ResultCache.default() if cached else None)
    outputs = run_request(output_type, request)  # shared by --nproc's processes, if any
    for row in outputs.rows:
        row["index"] += first
    return outputs


def _result(lm: LoadedModel, task: TaskConfig, n: int, outputs: Outputs, shots: int,
            system: System, bootstrap: int | None, start: float) -> EvalResult:
    warn_dropped(task, outputs, lm, stacklevel=4)  # at the caller of evaluate_loaded
    n_boot = task.eval.bootstrap if bootstrap is None else bootstrap
    scores, cis, signatures, items = score_outputs(task, outputs, n_boot)
    return EvalResult(
        task=task.name, system=system, shots=shots, n=n, scores=scores,
        ci=cis, signatures=signatures,
        mean_context_tokens=sum(outputs.context_tokens) / max(len(outputs.context_tokens), 1),
        dropped_shots=outputs.dropped_shots, seconds=time.perf_counter() - start,
        predictions=outputs.rows, items=items, output_type=task.output_type,
        mean_shot_tokens=sum(outputs.shot_tokens) / max(len(outputs.shot_tokens), 1),
        truncated=outputs.truncated, harm=score_harm(task, outputs),
    )


def score_harm(task: TaskConfig, outputs: Outputs) -> HarmRates | None:
    """The harm rates of the text the model wrote, each row marked with its flags ("harm":
    ["offensive"]); None when the output type gives a choice or a label, or nothing was
    generated."""
    if not outputs.rows or not get_output_type(task.output_type).writes_text(task):
        return None
    flagged = harm_flags([str(p) for p in outputs.predictions])
    for row, flags in zip(outputs.rows, flagged, strict=True):
        row["harm"] = flags
    return HarmRates.of(flagged)


def evaluate_loaded(
    lm: LoadedModel,
    task: TaskConfig,
    system: System,
    shots: int | None = None,
    limit: int | None = None,
    bootstrap: int | None = None,
    items: TaskItems | None = None,
    cached: bool = True,
) -> EvalResult:
    """Score `lm` on the task's split; predictions are kept per example.

    Args:
        shots: in-context examples per prompt (default 0; the task's few-shot setting is
            `task.fewshot_k()`).
        limit: score the first N items of the split.
        bootstrap: resamples for confidence intervals (default: eval.bootstrap; 0: none).
        items: the task's data as `read_task` read and checked it (default: read here).
        cached: look items up in the result cache (False: the model computes every one, as
            an export's check must: the artefact itself answers).
    """
    start = time.perf_counter()
    k = shots or 0
    get_output_type(task.output_type).check_shots(k)
    items = _read(task, items)
    records = items.scored(limit)
    outputs = _outputs(lm, task, records, k, items.pool(k), system, items.framing, 0, cached)
    return _result(lm, task, len(records), outputs, k, system, bootstrap, start)


def evaluate_shared(lm: LoadedModel, task: TaskConfig, system: System, shard: Shard,
                    limit: int | None = None) -> EvalResult | None:
    """`evaluate_loaded` (0-shot) split between the processes of a distributed run: each
    scores its share of the items (eval/shard.py); rank 0 gets the whole result, the other
    ranks None. The same numbers as one process: every item keeps its index and is scored
    alone (batch-invariant output types)."""
    start = time.perf_counter()
    items = _read(task)
    records = items.scored(limit)
    first, mine = shard.part(records)
    gathered = shard.gather(_outputs(lm, task, mine, 0, [], system, items.framing, first))
    if gathered is None:
        return None
    return _result(lm, task, len(records), gathered, 0, system, None, start)


def task_items(task: TaskConfig, limit: int | None = None, shots: int = 0
               ) -> tuple[list[Record], list[Record], Framing]:
    """The task's scored items (the first `limit`), its shot pool (when shots are wanted) and
    the data source's framing, read once by `read_task`."""
    items = _read(task)
    return items.scored(limit), items.pool(shots), items.framing


def _read(task: TaskConfig, items: TaskItems | None = None) -> TaskItems:
    """`items` when the caller read the task already; else the task checked (a task made in
    code, not by `load_task`) and read once. Shots are drawn from the pool as it is (a pool
    too small is `choose_shots`'s error)."""
    if items is not None:
        assert items.task is task, "items read for another task"
        return items
    check_task(task)
    return read_task(task, 0)


def score_outputs(
    task: TaskConfig, outputs: Outputs, bootstrap: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, str],
           dict[str, list[Any]]]:  # Any: each metric's own item type (Metric.item)
    """(scores, confidence intervals, signatures, per-item values) of every task metric."""
    scores: dict[str, float] = {}
    cis: dict[str, list[float]] = {}
    signatures: dict[str, str] = {}
    items_by_metric: dict[str, list[Any]] = {}  # Any: as Metric.item returns
    for name, metric in task_metrics(task).items():
        items = [metric.item(*args) for args in outputs.metric_inputs(metric.reads)]
        items_by_metric[name] = items
        scores.update(metric.aggregate(items))
        if bootstrap:
            cis.update({k: list(v) for k, v in bootstrap_ci(items, metric, n=bootstrap).items()})
        signatures[name] = metric.signature()
        for row, item in zip(outputs.rows, items, strict=True):
            row.setdefault("items", {})[name] = item
    return scores, cis, signatures, items_by_metric


def read_result(out_dir: str | Path | EvalDir) -> EvalResult:
    """An evaluation written by `write_result`, its per-item metric values rebuilt from the
    predictions (one-line errors for a directory that is not one)."""
    where = out_dir if isinstance(out_dir, EvalDir) else EvalDir(Path(out_dir))
    folder, metrics, predictions = where.root, where.metrics, where.predictions
    if not where.exists():
        raise TunelabError(f"{folder}: not an evaluation directory (needs metrics.json and "
                           "predictions.jsonl, as tunelab eval --out writes)")
    try:
        summary = json.loads(metrics.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TunelabError(f"{folder}: unreadable metrics.json or predictions.jsonl ({err}); "
                           "evaluate again") from None
    known = {f.name for f in fields(EvalResult)} - {"predictions", "items", "system", "harm"}
    result = EvalResult(system=System.from_json(summary.get("system_id"), summary["system"]),
                        harm=HarmRates.from_json(summary.get("harm")),
                        **{k: v for k, v in summary.items() if k in known})
    result.predictions = rows
    names = list(rows[0].get("items", {})) if rows else []
    result.items = {name: [row.get("items", {}).get(name) for row in rows] for name in names}
    if len(rows) != result.n:
        raise TunelabError(f"{predictions}: {len(rows)} rows for n={result.n} items; the "
                           "evaluation was cut short, evaluate again")
    return result


TASK_CONFIG = "task_config"
"""metrics.json's record of the task that scored it (`write_result(..., task)`)."""


def write_result(result: EvalResult, out_dir: Path | EvalDir, task: TaskConfig | None = None
                 ) -> None:
    """metrics.json (aggregates, CIs, signatures) + predictions.jsonl (per example). With
    `task`, metrics.json also records the task that scored it (under TASK_CONFIG), so a later
    `tunelab compare` needs no --task (a task from a run is named after the run)."""
    where = out_dir if isinstance(out_dir, EvalDir) else EvalDir(Path(out_dir))
    where.root.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    if task is not None:
        summary[TASK_CONFIG] = to_dict(task)
    where.metrics.write_text(json.dumps(summary, indent=1, default=str))
    with where.predictions.open("w") as handle:
        for row in result.predictions:
            handle.write(json.dumps(row, default=str) + "\n")
