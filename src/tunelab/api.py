"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.adapters import AdapterSet
from tunelab.baselines import BaselineReport, run_baselines
from tunelab.config import ModelConfig, TaskConfig, load_run_config
from tunelab.data.inspect import inspect_data as inspect_run_data
from tunelab.errors import TunelabError
from tunelab.eval.datasets.fetch import fetch_bigbench
from tunelab.eval.output_types import get_output_type, load_for_task
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.eval.tasks import is_suite, load_suite, load_task
from tunelab.eval.tasks import validate_task as validate_task_file
from tunelab.merge import merge_run
from tunelab.models.loader import load_tokenizer
from tunelab.quickstart import run_quickstart
from tunelab.report.tables import results_table, shown_keys, suite_table
from tunelab.report.tasks import tasks_overview
from tunelab.runs import load_run_model
from tunelab.scoring import format_scores, score
from tunelab.sweep import SweepOptions
from tunelab.sweep import run_sweep as run_sweep_options
from tunelab.training.run import TrainResult, run_task, train

__all__ = ["train", "run_task", "evaluate", "evaluate_adapters", "compare_baselines",
           "evaluate_suite", "run_evaluation", "Printout", "score", "format_scores", "quickstart",
           "inspect_data", "validate_task", "tasks_overview", "fetch_bigbench", "merge_run",
           "run_sweep", "harness", "TrainResult"]


def evaluate(
    task: str | TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Evaluate a model (optionally with a trained run's weights) on a task.

    Args:
        task: a built-in task name or a task YAML file (or a TaskConfig).
        model: base model spec; defaults to the adapter run's base, else the built-in model.
        adapter: a run directory from `tunelab train` whose weights are applied to the base.
        shots: in-context examples per prompt, from the task's few-shot split (default 0).
        limit: score at most this many examples.
        out_dir: where to write metrics.json and predictions.jsonl.
    """
    task_config = task if isinstance(task, TaskConfig) else load_task(task)
    shots = shots or 0
    if adapter:
        lm = load_run_model(adapter, base=model)
        system = f"{Path(adapter).name} {shots}-shot"
    else:
        lm = load_for_task(task_config, ModelConfig(name=model or ModelConfig().name))
        system = f"base {shots}-shot"
    result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit)
    if out_dir:
        write_result(result, Path(out_dir))
    return result


def evaluate_adapters(
    task: str | TaskConfig,
    adapters: list[str | Path] | dict[str, str | Path],
    model: str | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    include_base: bool = True,
) -> list[EvalResult]:
    """Score several adapter runs of one base on a task, loading the base once (AdapterSet);
    the base alone first when include_base. Adapters are named by their run directory."""

    task_config = task if isinstance(task, TaskConfig) else load_task(task)
    runs = adapters if isinstance(adapters, dict) else {Path(a).name: a for a in adapters}
    if len(runs) != len(adapters):
        raise TunelabError("--adapter: two runs share a directory name; pass a dict of names")
    bank = AdapterSet.from_runs(runs, base=model)
    shots = shots or 0
    results = []
    for name in ([None] if include_base else []) + list(runs):
        with bank.use(name):
            system = f"{name or 'base'} {shots}-shot"
            result = evaluate_loaded(bank.loaded(), task_config, system, shots=shots, limit=limit)
        results.append(result)
        if out_dir:
            write_result(result, Path(out_dir) / (name or "base"))
    return results


def compare_baselines(
    task: str | TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    baselines: list[str] | tuple[str, ...] = ("zero", "few"),
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> BaselineReport:
    """Base model zero-/few-shot vs the fine-tuned run on the same items, with a paired test.

    Args:
        baselines: zero, one, few (the task's fewshot.k, or `shots`), or numbers of shots.
        adapter: the fine-tuned run; without it the last baseline is tested against the rest.
        out_dir: per-system metrics.json + predictions.jsonl, and comparison.json.
    """
    task_config = task if isinstance(task, TaskConfig) else load_task(task)
    return run_baselines(task_config, model, adapter, list(baselines), shots, limit, out_dir)


def evaluate_suite(
    suite: str,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> list[EvalResult]:
    """Evaluate one model on every task of a suite (one model load; `tunelab tasks list`)."""

    tasks = [load_task(name) for name in load_suite(suite).tasks]
    shots = shots or 0
    name = f"{Path(adapter).name} {shots}-shot" if adapter else f"base {shots}-shot"
    results, lm = [], None
    for task in tasks:
        if get_output_type(task.output_type).needs_head and not adapter:
            lm_task = load_for_task(task, ModelConfig(name=model or ModelConfig().name))
        else:
            lm = lm or (load_run_model(adapter, base=model) if adapter else
                        load_for_task(task, ModelConfig(name=model or ModelConfig().name)))
            lm_task = lm
        result = evaluate_loaded(lm_task, task, name, shots=shots, limit=limit)
        results.append(result)
        if out_dir:
            write_result(result, Path(out_dir) / task.name)
    return results


def quickstart(out_dir: str | Path = "runs", limit: int | None = None, **kw: Any) -> Path:
    """Fine-tune the built-in model with LoRA on the built-in sentiment task and compare it
    with its own zero- and few-shot baselines. Returns the run directory."""

    return run_quickstart(Path(out_dir), limit=limit, **kw)


@dataclass
class Printout:
    """What a command shows: a table for people, or the same results as JSON."""

    text: str
    data: Any

    def render(self, as_json: bool) -> str:
        return json.dumps(self.data, indent=1, default=str) if as_json else self.text


def run_evaluation(
    task: str,
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    shots: int | None = None,
    baselines: Sequence[str] | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> Printout:
    """`tunelab eval`: one task or a suite; one run's weights or several on one base; with or
    without base-model baselines. Picks the call above that fits and lays out its results."""
    names = load_suite(task).tasks if is_suite(task) else [task]
    if len(adapters) > 1:
        if baselines or len(names) > 1:
            raise TunelabError("several --adapter options score one task (no --baselines, no "
                               "suite); run once per task")
        results = evaluate_adapters(task, list(adapters), model=model, shots=shots, limit=limit,
                                    out_dir=out_dir)
        return Printout(results_table(results, shown_keys(results[0].scores)),
                        [r.summary() for r in results])
    adapter = adapters[0] if adapters else None
    if baselines:
        reports = [compare_baselines(
            name, model=model, adapter=adapter, baselines=list(baselines), shots=shots, limit=limit,
            out_dir=Path(out_dir) / Path(name).stem if out_dir and len(names) > 1 else out_dir)
            for name in names]
        return Printout("\n\n".join(r.table() for r in reports),
                        [r.to_json() for r in reports] if len(reports) > 1 else reports[0].to_json())
    if len(names) > 1:
        results = evaluate_suite(task, model=model, adapter=adapter, shots=shots, limit=limit,
                                 out_dir=out_dir)
        return Printout(suite_table(results), [r.summary() for r in results])
    result = evaluate(task, model=model, adapter=adapter, shots=shots, limit=limit, out_dir=out_dir)
    return Printout(results_table([result], shown_keys(result.scores)), result.summary())


def inspect_data(config: str | Path, overrides: list[str] | None = None, count: int = 3,
                 split: str = "train") -> str:
    """`tunelab data inspect`: templated examples with the trained tokens marked, per task."""
    return inspect_run_data(load_run_config(config, overrides), count, split)


def validate_task(task: str, model: str | None = None) -> str:
    """`tunelab tasks validate`: check a task file and its data (`model`: a tokenizer for chat
    templates)."""
    return validate_task_file(task, load_tokenizer(ModelConfig(name=model)) if model else None)


def run_sweep(config: str | Path, overrides: list[str], methods: list[str], max_steps: int = 0,
          max_seconds: float = 0, lr: dict[str, float] | None = None, resume: bool = False,
          retention: list[str] | None = None) -> Path:
    """`tunelab sweep`: every method on the same data and budget; returns the sweep directory."""
    options = SweepOptions(methods=methods, max_steps=max_steps, max_seconds=max_seconds,
                           lr=lr or {}, resume=resume, retention=retention)
    return run_sweep_options(str(config), overrides, options)


def harness(tasks: list[str], **options: Any) -> str:
    """`tunelab harness`: lm-evaluation-harness tasks on a tunelab model (the `harness` extra)."""
    try:  # lm-evaluation-harness is an optional extra
        from tunelab.bridges.lm_eval import run_harness
    except ImportError as err:
        raise TunelabError(f"tunelab harness needs lm-evaluation-harness ({err}); run: "
                           "pip install -c constraints.txt 'tunelab[harness]'") from None
    return run_harness(tasks, **options)
