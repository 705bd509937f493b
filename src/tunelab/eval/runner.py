"""Evaluate one model (base, fine-tuned, or base + adapter) on one task, zero- or few-shot.

Requests (generation, log-likelihood) are separate from scoring: predictions are made once,
then every metric scores them per item and aggregates, with bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import TaskConfig
from tunelab.data import (
    Record,
    Template,
    encode_prompt,
    get_template,
    load_splits,
    tokenize_example,
)
from tunelab.errors import TunelabError
from tunelab.eval.generate import generate
from tunelab.eval.loglikelihood import completion_nll
from tunelab.eval.metrics import bootstrap_ci, get_metric
from tunelab.models import LoadedModel


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

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("predictions")
        data.pop("items")
        return data


def context_limit(lm: LoadedModel) -> int:
    limit = getattr(lm.model.config, "max_position_embeddings", None) or getattr(
        lm.model.config, "n_positions", None)
    return int(limit or min(lm.tokenizer.model_max_length, 2048))


def sample_shots(pool: list[Record], k: int, seed: int, index: int) -> list[Record]:
    """k in-context examples for item `index`, seeded per item (reproducible, varied)."""
    if k == 0:
        return []
    if k > len(pool):
        raise TunelabError(f"--shots {k}: the few-shot split has only {len(pool)} examples")
    return random.Random(f"{seed}-{index}").sample(pool, k)


def build_prompt(
    template: Template, record: Record, shots: list[Record], lm: LoadedModel, budget: int
) -> tuple[list[int], Any, int]:
    """Prompt ids that fit in `budget` tokens, dropping whole shots (never cutting one)."""
    dropped = 0
    while True:
        rendered = template.render(record, shots)
        ids = encode_prompt(rendered, lm.tokenizer)
        if len(ids) <= budget or not shots:
            return ids, rendered, dropped
        shots = shots[:-1]
        dropped += 1


def evaluate_loaded(
    lm: LoadedModel,
    task: TaskConfig,
    system: str,
    shots: int = 0,
    limit: int | None = None,
    bootstrap: int = 1000,
) -> EvalResult:
    """Score `lm` on the task's split; predictions are kept per example."""
    start = time.perf_counter()
    splits = load_splits(task.data)
    records = splits.get(task.split)
    if not records:
        raise TunelabError(f"task {task.name}: the {task.split} split is empty; check its data sizes")
    records = records[:limit] if limit else records
    pool = splits.get(task.fewshot_split)
    template = get_template(task.data, lm.tokenizer)
    gen = task.eval.generation
    budget = context_limit(lm) - gen.max_new_tokens
    prompts, rendered_all, dropped = [], [], 0
    for index, record in enumerate(records):
        chosen = sample_shots(pool, shots, task.eval.fewshot_seed, index)
        ids, rendered, n_dropped = build_prompt(template, record, chosen, lm, budget)
        prompts.append(ids)
        rendered_all.append(rendered)
        dropped += n_dropped
    if dropped:
        warnings.warn(f"{task.name}: dropped {dropped} in-context examples that would overflow "
                      f"the {context_limit(lm)}-token context", stacklevel=2)
    metric_names = list(task.eval.metrics)
    text_metrics = [m for m in metric_names if m != "perplexity"]
    predictions = (generate(lm.model, lm.tokenizer, prompts, gen, desc=f"{system}")
                   if text_metrics else [""] * len(records))
    references = [r.output if r.messages is None else r.messages[-1]["content"] for r in records]
    rows: list[dict[str, Any]] = [
        {"index": i, "origin": r.origin, "input": _input_text(r), "prompt": rendered_all[i].prompt,
         "prediction": predictions[i], "reference": references[i]}
        for i, r in enumerate(records)
    ]
    scores: dict[str, float] = {}
    cis: dict[str, list[float]] = {}
    signatures: dict[str, str] = {}
    items_by_metric: dict[str, list[Any]] = {}
    for name in metric_names:
        options = {"labels": task.eval.labels} if name == "classification" and task.eval.labels else {}
        metric = get_metric(name, **options)
        if name == "perplexity":
            tokenized = [tokenize_example(r, lm.tokenizer, max_length=budget + gen.max_new_tokens)
                         for r in rendered_all]
            items = [metric.item(nll, n) for nll, n in
                     completion_nll(lm.model, tokenized, lm.tokenizer.pad_token_id, gen.batch_size)]
        else:
            items = [metric.item(p, ref) for p, ref in zip(predictions, references, strict=True)]
        items_by_metric[name] = items
        scores.update(metric.aggregate(items))
        if bootstrap:
            cis.update({k: list(v) for k, v in bootstrap_ci(items, metric, n=bootstrap).items()})
        signatures[name] = metric.signature()
        for row, item in zip(rows, items, strict=True):
            row.setdefault("items", {})[name] = item
    return EvalResult(
        task=task.name, system=system, shots=shots, n=len(records), scores=scores, ci=cis,
        signatures=signatures,
        mean_context_tokens=sum(map(len, prompts)) / len(prompts),
        dropped_shots=dropped, seconds=time.perf_counter() - start,
        predictions=rows, items=items_by_metric,
    )


def _input_text(record: Record) -> str:
    if record.messages is not None:
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        return users[-1] if users else ""
    return record.input or record.instruction


def write_result(result: EvalResult, out_dir: Path) -> None:
    """metrics.json (aggregates, CIs, signatures) + predictions.jsonl (per example)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(result.summary(), indent=1, default=str))
    with (out_dir / "predictions.jsonl").open("w") as handle:
        for row in result.predictions:
            handle.write(json.dumps(row, default=str) + "\n")
