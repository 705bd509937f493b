"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import (
    EvalConfig,
    RunConfig,
    TaskConfig,
    load_run_config,
)
from tunelab.errors import TunelabError
from tunelab.eval.baselines import BaselineReport
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.models.kinds import CAUSAL, find_kind
from tunelab.scoring import format_scores, score

__all__ = ["train", "evaluate", "evaluate_adapters", "compare_baselines", "evaluate_suite", "score", "format_scores",
           "quickstart", "TrainResult"]


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]
    evaluation: EvalResult | None
    """The test-split evaluation of a single-task run."""
    task_evaluations: dict[str, EvalResult] = field(default_factory=dict)
    """A multi-task run's test-split evaluation per task (eval/fine-tuned/<task>/)."""
    retention: list[Any] = field(default_factory=list)
    """RetentionRow per retention task: score before and after training, change, 95% CI."""
    passed: bool = True
    """False when retention dropped by more than retention.max_forgetting."""


def train(
    config: RunConfig | str | Path,
    overrides: list[str] | None = None,
    resume: bool = False,
    evaluate_after: bool = True,
) -> TrainResult:
    """Fine-tune as the config says and write a run directory.

    Args:
        config: a RunConfig, or a YAML file path.
        overrides: ``key=value`` strings applied on top (``train.lr=1e-4``).
        resume: continue an interrupted run from its last checkpoint.
        evaluate_after: score the fine-tuned model on the test split (config.eval), or on
            every task's test split for a multi-task run (`tasks` or a built-in mixture).
    """
    import transformers

    from tunelab import retention
    from tunelab.data.mixture import MixtureData, MixturePlan
    from tunelab.methods import get_method, trainable_parameters
    from tunelab.methods.base import directory_size, parse_options
    from tunelab.models import load_model
    from tunelab.report.markdown import write_run_report
    from tunelab.runs import read_config, write_config
    from tunelab.training.checkpoint import write_atomically
    from tunelab.training.loop import TrainData, Trainer, peak_memory_mb
    from tunelab.training.multitask import (
        evaluate_tasks,
        mixture_summary,
        mixture_tasks,
        prepare_mixture,
    )

    if not isinstance(config, RunConfig):
        config = load_run_config(config, overrides)
    elif overrides:
        raise TunelabError("overrides apply to a config file; edit the RunConfig object instead")
    run_dir = config.run_dir
    if resume:
        saved = read_config(run_dir)
        if saved != config:
            raise TunelabError(f"--resume: {run_dir}/config.yaml differs from this config; "
                               "resume with the same config and overrides")
    elif (run_dir / "config.yaml").exists():
        raise TunelabError(f"{run_dir} already holds a run; pass --resume to continue it, "
                           "or choose another name (name=...) or output_dir")
    method = get_method(config.method["name"])
    options = parse_options(method, config.method)
    tasks = mixture_tasks(config) if config.is_mixture else []  # checked before any loading
    kept = retention.retention_tasks(config.retention, config.model.kind)
    transformers.set_seed(config.train.seed)
    lm = load_model(config.model, labels=config.eval.labels)  # model.kind picks the class
    before = {}
    if kept:  # before the method touches the model; cached per base model
        print(f"tunelab: retention suite before training: {', '.join(t.name for t in kept)}")
        before = retention.base_scores(lm, config.model, kept, config.retention.limit)
    data: TrainData | MixtureData
    if config.is_mixture:
        data, task_splits = prepare_mixture(config, lm, tasks)  # before the method changes lm
        train_examples = [ex for task in data.tasks for ex in task.train]
    else:
        data, splits = _single_task_data(config, lm)
        train_examples = list(data.train)
    model = method.apply(lm.model, options)
    counts = trainable_parameters(model)
    print(f"tunelab: {config.method['name']} on {config.model.name}: {counts}")
    write_config(config, run_dir)
    trainer = Trainer(model, config.train, data, run_dir)
    if kept and config.retention.every_eval:
        trainer.eval_hooks.append(retention.curve_hook(lm, kept, config.retention.limit))
    if resume:
        trainer.resume()
    start = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - start
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights_dir = run_dir / method.weights_dir
    write_atomically(weights_dir, lambda tmp: method.save(model, tmp))
    size_on_disk = directory_size(weights_dir)
    lm.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    if (weights_dir / "config.json").is_file():  # a complete model: make it loadable alone
        lm.tokenizer.save_pretrained(str(weights_dir))
    logged = [h for h in state.history if "tokens_per_s" in h]
    summary = {
        "method": config.method["name"],
        "model": config.model.name,
        "trainable_parameters": counts.trainable,
        "total_parameters": counts.total,
        "trainable_percent": counts.percent,
        "size_on_disk_bytes": size_on_disk,
        "steps": state.step,
        "train_seconds": seconds,
        "tokens_seen": state.tokens_seen,
        "tokens_per_s": (sum(h["tokens_per_s"] for h in logged) / len(logged)) if logged else None,
        "peak_memory_mb": peak_memory_mb(),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "out_of_time": state.out_of_time,
        "truncated_examples": sum(ex.truncated for ex in train_examples),
        "train_examples": len(train_examples),
    }
    if isinstance(data, MixtureData):
        assert isinstance(trainer.plan, MixturePlan)
        summary["mixture"] = mixture_summary(trainer.plan, trainer.tasks, config,
                                             state.task_examples, state.history, state.best_step)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    evaluation, task_evaluations = None, {}
    lm.model = model
    if evaluate_after and isinstance(data, MixtureData):
        task_evaluations = evaluate_tasks(lm, tasks, task_splits, run_dir, config.eval.limit)
        summary["test_scores"] = {name: r.scores for name, r in task_evaluations.items()}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    elif evaluate_after and splits.test and config.eval.metrics:
        evaluation = evaluate_loaded(lm, run_task(config), "fine-tuned", shots=0,
                                     limit=config.eval.limit)
        write_result(evaluation, run_dir / "eval" / "fine-tuned")
    rows, passed = [], True
    if kept:
        after = retention.score_tasks(lm, kept, config.retention.limit, "fine-tuned")
        for name, result in after.items():
            write_result(result, run_dir / "eval" / "retention" / name)
        rows = retention.compare(before, after, kept)
        passed = retention.write_retention(rows, run_dir / "retention.json",
                                           config.retention.max_forgetting)
        summary["retention"] = {"worst_forgetting": retention.worst_forgetting(rows),
                                "max_forgetting": config.retention.max_forgetting,
                                "passed": passed,
                                "significant_drops": retention.significant_drops(rows)}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        print("retention (before -> after training):")
        print(retention.retention_table(rows))
        if not passed:
            print(f"tunelab: FAILED: forgetting {retention.worst_forgetting(rows):.2f} exceeds "
                  f"retention.max_forgetting {config.retention.max_forgetting:g}")
    write_run_report(run_dir, config, summary, evaluation, task_evaluations, rows)
    return TrainResult(run_dir, summary, evaluation, task_evaluations, rows, passed)


def _single_task_data(config: RunConfig, lm: Any) -> tuple[Any, Any]:
    """The `data` section's splits, tokenised for the model's kind: (TrainData, Splits)."""
    from tunelab.data import get_template, load_splits
    from tunelab.data.tokenize import tokenize_record
    from tunelab.eval.tasks import check_task
    from tunelab.training.loop import TrainData

    if lm.kind.checks_metrics_before_training and config.eval.metrics:
        check_task(run_task(config))  # a head's metrics fail now, not after training
    splits = load_splits(config.data)
    template = get_template(config.data, lm.tokenizer)

    def tokenize(records: list) -> list:
        return [tokenize_record(r, template, lm.tokenizer, lm.kind, config.data.max_length,
                                config.eval.labels) for r in records]

    data = TrainData(tokenize(splits.train), tokenize(splits.validation), lm.tokenizer.pad_token_id)
    return data, splits


def run_task(config: RunConfig, eval_config: EvalConfig | None = None) -> TaskConfig:
    """The evaluation task a training config implies: its data and its eval section (a
    classifier's head is scored with the classification output type)."""
    kind = find_kind(config.model.kind) or CAUSAL  # an unknown kind fails when the model loads
    output_type = kind.default_output_type
    return TaskConfig(name=config.name, data=config.data, split="test", output_type=output_type,
                      eval=eval_config or config.eval)


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
    from tunelab.config import ModelConfig
    from tunelab.eval.baselines import load_for_task
    from tunelab.eval.tasks import load_task
    from tunelab.runs import load_run_model

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
    from tunelab.adapters import AdapterSet
    from tunelab.eval.tasks import load_task

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
    from tunelab.eval.baselines import run_baselines
    from tunelab.eval.tasks import load_task

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
    from tunelab.config import ModelConfig
    from tunelab.eval.baselines import load_for_task
    from tunelab.eval.tasks import load_suite, load_task
    from tunelab.runs import load_run_model

    tasks = [load_task(name) for name in load_suite(suite).tasks]
    shots = shots or 0
    name = f"{Path(adapter).name} {shots}-shot" if adapter else f"base {shots}-shot"
    results, lm = [], None
    for task in tasks:
        if task.output_type == "classification" and not adapter:
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
    from tunelab.quickstart import run_quickstart

    return run_quickstart(Path(out_dir), limit=limit, **kw)
