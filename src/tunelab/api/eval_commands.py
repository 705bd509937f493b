"""The Python API of `tunelab eval` (one task, a suite, several runs, baselines),
`tunelab harness` and `tunelab tasks`: one function per command, which the CLI calls."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tunelab.config import ModelConfig, TaskConfig
from tunelab.config.choices import NONNEGATIVE, Range
from tunelab.core.errors import TunelabError
from tunelab.eval.output_types import get_output_type, load_for_task
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.eval.tables import results_table, shown_keys, suite_table
from tunelab.eval.tasks import is_suite, load_suite, load_task, read_task, task_of
from tunelab.eval.tasks import validate_task as validate_task_file
from tunelab.models import LoadedModel
from tunelab.models.loader import load_tokenizer
from tunelab.report.task_list import tasks_overview
from tunelab.runs import (
    EvalDir,
    RunDir,
    System,
    read_config,
    scoring_run_model,
)
from tunelab.runs.adapter_set import AdapterSet
from tunelab.studies.baselines import BaselineReport, run_baselines


def check_eval_args(shots: int | None, limit: int | None, out_dir: str | Path | None = None
                    ) -> None:
    """--shots, --limit and --out in one line each, before any work: 0 or more shots, at
    least one item, an output directory that is one (or can be made)."""
    NONNEGATIVE.check("--shots", shots)
    Range(1, whole=True, fix="leave --limit out to score the whole split").check("--limit", limit)
    if out_dir is None:
        return
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TunelabError(f"--out {out}: is a file; give a directory (metrics.json and "
                           "predictions.jsonl are written into it)")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise TunelabError(f"--out {out}: {parent} is not writable; choose another directory")


@dataclass
class Printout:
    """What a command shows: a table for people, or the same results as JSON."""

    text: str
    data: object
    """The results as JSON-serialisable values (`json.dumps`)."""

    def render(self, as_json: bool) -> str:
        return json.dumps(self.data, indent=1, default=str) if as_json else self.text


def evaluate_task(
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
    check_eval_args(shots, limit, out_dir)
    task_config = task_of(task)
    shots = shots or 0
    items = read_task(task_config, shots)  # read and checked once, before a model loads
    if adapter:
        lm = scoring_run_model(adapter, base=model)
        system = System.tuned(Path(adapter).name, shots)
    else:
        lm = load_for_task(task_config, ModelConfig(name=model or ModelConfig().name))
        system = System.base(shots)
    result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit, items=items)
    if out_dir:
        write_result(result, Path(out_dir), task_config)  # remembers the task (compare)
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
    """Score several runs of one base on a task, loading the base once where their adapters
    can share it (AdapterSet), else each run alone (a full fine-tune, a merged start, adapters
    of different types); the base alone first when include_base. Runs are named by their
    directory."""
    check_eval_args(shots, limit, out_dir)

    task_config = task_of(task)
    items = read_task(task_config, shots or 0)
    runs = adapters if isinstance(adapters, dict) else {Path(a).name: a for a in adapters}
    if len(runs) != len(adapters):
        raise TunelabError("--adapter: two runs share a directory name; pass a dict of names")
    shots = shots or 0
    results = []

    def scored(name: str | None, lm: LoadedModel) -> None:
        system = System.named_adapter(name, shots) if name else System.base(shots)
        result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit, items=items)
        results.append(result)
        if out_dir:
            write_result(result, EvalDir(Path(out_dir) / (name or "base")), task_config)
    if AdapterSet.can_share(runs.values()):
        bank = AdapterSet.from_runs(runs, base=model)
        for name in ([None] if include_base else []) + list(runs):
            with bank.use(name):
                scored(name, bank.loaded())
        return results
    first = read_config(Path(next(iter(runs.values())))).model
    if include_base:
        scored(None, load_for_task(task_config, replace(first, name=model or first.name)))
    for name, run_dir in runs.items():  # one model in memory at a time
        scored(name, scoring_run_model(run_dir, base=model))
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
    check_eval_args(shots, limit, out_dir)
    return run_baselines(task_of(task), model, adapter, list(baselines), shots, limit, out_dir)


def evaluate_suite(
    suite: str,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> list[EvalResult]:
    """Evaluate one model on every task of a suite (one model load; `tunelab tasks list`)."""
    check_eval_args(shots, limit, out_dir)

    tasks = [load_task(name) for name in load_suite(suite).tasks]
    shots = shots or 0
    system = System.tuned(Path(adapter).name, shots) if adapter else System.base(shots)
    results, lm = [], None
    for task in tasks:
        items = read_task(task, shots)  # before its model loads
        if get_output_type(task.output_type).needs_head and not adapter:
            lm_task = load_for_task(task, ModelConfig(name=model or ModelConfig().name))
        else:
            lm = lm or (scoring_run_model(adapter, base=model) if adapter else
                        load_for_task(task, ModelConfig(name=model or ModelConfig().name)))
            lm_task = lm
        result = evaluate_loaded(lm_task, task, system, shots=shots, limit=limit, items=items)
        results.append(result)
        if out_dir:
            write_result(result, EvalDir(Path(out_dir) / task.name), task)
    return results


def evaluate(
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
    check_eval_args(shots, limit, out_dir)
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
    result = evaluate_task(task, model=model, adapter=adapter, shots=shots, limit=limit,
                           out_dir=out_dir)
    return Printout(results_table([result], shown_keys(result.scores)), result.summary())


def harness(tasks: list[str], model: str | None = None, adapter: str | None = None,
            include_path: str | None = None, shots: int | None = None, limit: int | None = None,
            batch_size: int = 8, apply_chat_template: bool | str = False,
            output: str | Path | None = None, log_samples: bool = False,
            max_length: int | None = None) -> str:
    """`tunelab harness`: lm-evaluation-harness tasks on a tunelab model (the `harness` extra);
    `output` gets lm-eval's results JSON and, with `log_samples`, each task's samples JSONL.
    Its options are checked before lm-eval loads, its task names before the model does."""
    tasks = [task.strip() for task in tasks if task.strip()]
    check_eval_args(shots, limit)
    Range(1, whole=True, fix="e.g. 8").check("--batch-size", batch_size)
    Range(1, whole=True, fix="leave it out for the model's own").check("--max-length", max_length)
    if not tasks:
        raise TunelabError("--tasks: no task named; e.g. --tasks hellaswag,arc_easy")
    if include_path is not None and not Path(include_path).exists():
        raise TunelabError(f"--include_path {include_path}: no such file or folder; give the "
                           "folder of your task YAML files")
    if adapter is not None:
        RunDir(Path(adapter)).read_config()  # not a run: one line, before lm-eval loads
    if log_samples and output is None:
        raise TunelabError("--log-samples: the samples are written beside the results; "
                           "add --output DIR")
    if output is not None and Path(output).is_file() and Path(output).suffix != ".json":
        raise TunelabError(f"--output {output}: is a file; give a directory (or a .json path)")
    try:  # lm-evaluation-harness is an optional extra
        from tunelab.eval.harness import run_harness
    except ImportError as err:
        raise TunelabError(f"tunelab harness needs lm-evaluation-harness ({err}); run: "
                           "pip install -c constraints.txt 'tunelab[harness]'") from None
    return run_harness(tasks, model=model, adapter=adapter, include_path=include_path,
                       shots=shots, limit=limit, batch_size=batch_size,
                       apply_chat_template=apply_chat_template,
                       output=str(output) if output is not None else None, log_samples=log_samples,
                       max_length=max_length)


def tasks_validate(task: str, model: str | None = None) -> str:
    """`tunelab tasks validate`: check a task file and its data (`model`: a tokenizer for chat
    templates)."""
    return validate_task_file(task, load_tokenizer(ModelConfig(name=model)) if model else None)


def tasks_list() -> str:
    """`tunelab tasks list`: the built-in tasks and suites as tables."""
    return tasks_overview()
