"""`tunelab train`: the whole run, top to bottom, in one place.

    check the run directory -> resolve the method and tasks -> load the model
    -> score the retention suite, robustness and bias probes before training -> prepare the
    data (augmented when data.augment says so) -> apply the method -> fit -> save -> evaluate
    every task's test split -> retention, robustness and bias after -> summary -> report

A single-task run (the `data` section) is a one-task list, so both kinds of run take the same
path; only the batch plan (a seeded permutation, or the mixture's plan) and where per-task
results go differ, and the data decides both (`TrainingData`). Everything scored at an
evaluation step during training is an eval hook on the Trainer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch.distributed as dist
import transformers

from tunelab.config import RunConfig, TaskConfig, TrainTaskConfig, load_run_config
from tunelab.core.errors import TunelabError
from tunelab.data.mixture import MixturePlan
from tunelab.data.training_tasks import evaluation_task, run_task, training_tasks
from tunelab.eval.runner import EvalResult, evaluate_loaded, evaluate_shared, write_result
from tunelab.eval.shard import Shard
from tunelab.eval.tasks import check_task, check_task_data
from tunelab.methods import get_method, trainable_parameters
from tunelab.methods.base import ParameterCount, directory_size, parse_options
from tunelab.models import LoadedModel, get_kind, load_model
from tunelab.report.markdown import write_run_report
from tunelab.report.run_page import write_html_report
from tunelab.runs.run_dir import read_config, write_config
from tunelab.studies import retention
from tunelab.studies.bias import RunBias
from tunelab.studies.retention import retention_table
from tunelab.studies.robustness import RunRobustness
from tunelab.training.checkpoint import LoopState, write_atomically
from tunelab.training.data import PreparedData, prepare_data, read_splits
from tunelab.training.loop import Trainer, peak_memory_mb


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


def train(config: RunConfig | str | Path, overrides: list[str] | None = None,
          resume: bool = False, evaluate_after: bool = True) -> TrainResult:
    """Fine-tune as the config says and write a run directory.

    Args:
        config: a RunConfig, or a YAML file path.
        overrides: ``key=value`` strings applied on top (``train.lr=1e-4``).
        resume: continue an interrupted run from its last checkpoint.
        evaluate_after: score the fine-tuned model on every task's test split.
    """
    config = _resolve_config(config, overrides)
    run_dir = config.run_dir
    if first_process():  # several processes: rank 0 checks, writes and cleans up
        check_run_dir(config, resume)
    existed = run_dir.exists()
    try:
        with on_sigterm(_stop):
            return _train(config, resume, evaluate_after)
    except BaseException:
        if not resume and first_process():
            with on_sigterm(signal.SIG_IGN):  # the clean-up finishes
                undo_failed_start(run_dir, existed)
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # this process's part ends here, not at interpreter exit


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def on_sigterm(handler: Any) -> Iterator[None]:
    """Several processes: when one fails, torchrun stops the others with SIGTERM. While
    training, `_stop` ends the process as an exception does, so rank 0 still removes a failed
    start; while removing it, SIG_IGN lets the clean-up finish."""
    if "RANK" not in os.environ or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def first_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def _train(config: RunConfig, resume: bool, evaluate_after: bool) -> TrainResult:
    run_dir = config.run_dir
    method = get_method(config.method["name"])
    options = parse_options(method, config.method)
    packed = [t for t in training_tasks(config) if t.data.packing]
    if packed and not get_kind(config.model.kind).packs:
        raise TunelabError(f"data.packing: model.kind {config.model.kind} trains on padded "
                           "batches; packing is for causal models; turn it off")
    if packed and not getattr(method, "supports_packing", True):
        raise TunelabError(f"data.packing: not with method {method.name} (its virtual tokens "
                           "would be shared by every example of a packed row); turn it off")
    if config.train.gradient_checkpointing and not getattr(method, "supports_checkpointing", True):
        raise TunelabError(f"train.gradient_checkpointing: not with method {method.name}; "
                           "turn it off for this method")
    tasks = training_tasks(config)  # checked before any loading
    for task in tasks:  # every metric name, before any loading (not after training)
        if task.eval.metrics:
            check_task(evaluation_task(task, config, "test"))
    splits = read_splits(tasks)  # every data file read and checked before a model loads
    if first_process():  # rank 0 alone makes the run directory (and removes a failed start)
        check_writable(run_dir)
    kept = retention.retention_tasks(config.retention, config.model.kind)
    for task in kept:  # the retention suite's data too
        check_task_data(task, 0)
    single = None if config.is_mixture else run_task(config)
    robust = RunRobustness.of(config.robustness, single)  # items perturbed before loading
    bias = RunBias.of(config.bias, single)
    transformers.set_seed(config.train.seed)
    lm = load_model(config.model, labels=config.eval.labels)  # model.kind picks the class
    before = {}
    if kept:  # before the method touches the model; cached per base model
        print(f"tunelab: retention suite before training: {', '.join(t.name for t in kept)}")
        before = retention.base_scores(lm, config.model, kept, config.retention.limit)
    robust_before = robust.score(lm, "base 0-shot") if robust else None
    bias_before = bias.score(lm, "base 0-shot") if bias else None
    prepared = prepare_data(config, lm, tasks, splits)  # before the method changes lm

    model = method.apply(lm.model, options)
    counts = trainable_parameters(model)
    print(f"tunelab: {config.method['name']} on {config.model.name}: {counts}")
    if first_process():
        write_config(config, run_dir)
    trainer = Trainer(model, config.train, prepared.data, run_dir)
    if config.is_mixture and config.mixture.eval_limit > 0:
        trainer.eval_hooks.append(task_metric_hook(lm, tasks, prepared, config.mixture.eval_limit))
    if kept and config.retention.every_eval:
        trainer.eval_hooks.append(retention.curve_hook(lm, kept, config.retention.limit))
    if resume:
        trainer.resume()
    start = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - start
    shard = Shard.of(trainer.accelerator)  # several processes: each scores a share
    if not trainer.accelerator.is_main_process:  # rank 0 alone writes
        if evaluate_after:
            lm.model = trainer.trained_model()
            evaluate_tasks(lm, config, tasks, prepared, shard)
        return TrainResult(run_dir, {}, None, {}, [], True)

    model = trainer.trained_model()
    weights_dir = run_dir / method.weights_dir
    write_atomically(weights_dir, lambda tmp: method.save(model, tmp))
    size_on_disk = directory_size(weights_dir)  # the trained weights alone
    lm.tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    if (weights_dir / "config.json").is_file():  # a complete model: make it loadable alone
        lm.tokenizer.save_pretrained(str(weights_dir))
    summary = training_summary(config, counts, size_on_disk, state, seconds, prepared)
    summary["placement"] = trainer.placement
    if isinstance(trainer.plan, MixturePlan):
        summary["mixture"] = mixture_summary(trainer.plan, trainer, config, state)

    lm.model = model
    evaluations = evaluate_tasks(lm, config, tasks, prepared, shard) if evaluate_after else {}
    evaluation = None if config.is_mixture else evaluations.get(config.name)
    if config.is_mixture and evaluate_after:
        summary["test_scores"] = {name: r.scores for name, r in evaluations.items()}
    rows, passed = [], True
    if kept:
        rows, passed = check_retention(lm, config, kept, before, summary)
    robust_report = robust.finish(robust_before, robust.score(lm, "fine-tuned"), run_dir,
                                  summary) if robust and robust_before else None
    bias_report = bias.finish(bias_before, bias.score(lm, "fine-tuned"), run_dir,
                              summary) if bias and bias_before else None
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    task_evaluations = evaluations if config.is_mixture else {}
    write_run_report(run_dir, config, summary, evaluation, task_evaluations, rows,
                     robust_report, bias_report)
    write_html_report(run_dir)
    return TrainResult(run_dir, summary, evaluation, task_evaluations, rows, passed)


def _resolve_config(config: RunConfig | str | Path, overrides: list[str] | None) -> RunConfig:
    if not isinstance(config, RunConfig):
        return load_run_config(config, overrides)
    if overrides:
        raise TunelabError("overrides apply to a config file; edit the RunConfig object instead")
    return config


def check_run_dir(config: RunConfig, resume: bool) -> None:
    """A new run never overwrites one; a resumed run must have the same config. A run that
    stopped before its first checkpoint is resumed from step 0."""
    run_dir = config.run_dir
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise TunelabError(f"--resume: no run in {run_dir} (no config.yaml); start it "
                               "without --resume")
        if read_config(run_dir) != config:
            raise TunelabError(f"--resume: {run_dir}/config.yaml differs from this config; "
                               "resume with the same config and overrides")
    elif (run_dir / "config.yaml").exists():
        if has_checkpoint(run_dir) or (run_dir / "summary.json").is_file():
            raise TunelabError(f"{run_dir} already holds a run; pass --resume to continue it, "
                               "or choose another name (name=...) or output_dir")
        raise TunelabError(f"{run_dir} holds a run that stopped before its first checkpoint; "
                           "pass --resume to start it again in place (or delete the directory)")


def check_writable(run_dir: Path) -> None:
    """The run directory can be made and written, before any work (a failed start removes
    what this made)."""
    probe = run_dir / f".tunelab-write-test-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TunelabError(f"output_dir {run_dir.parent}: cannot write the run directory there "
                           f"({err.strerror or err}); choose another output_dir") from None


def has_checkpoint(run_dir: Path) -> bool:
    last = run_dir / "checkpoints" / "last"
    return (last / "loop_state.json").is_file() or (
        last.with_name(".last.old") / "loop_state.json").is_file()


RUN_FILES = ("config.yaml", "train_log.jsonl", "checkpoints", "tensorboard", "mlruns")
"""What a run writes before its first checkpoint: removed again when that start fails."""


def undo_failed_start(run_dir: Path, existed: bool) -> None:
    """A start that failed before any checkpoint leaves nothing that blocks the same command:
    the run directory goes if this start made it, else only the files a run writes."""
    if has_checkpoint(run_dir):
        return
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def task_metric_hook(lm: LoadedModel, tasks: list[TrainTaskConfig], prepared: PreparedData,
                     limit: int) -> Any:
    """An eval hook: every mixture task's metric on its validation split (`limit` items)."""
    scored = [t for t, ex in zip(tasks, prepared.data.tasks, strict=True)
              if ex.validation and t.eval.metrics]

    def hook(model: Any) -> dict[str, Any]:
        view = replace(lm, model=model)
        return {"metrics_by_task": {
            task.name: evaluate_loaded(view, TaskConfig(name=task.name, data=task.data,
                                                        split="validation", eval=task.eval),
                                       "validation", shots=0, limit=limit, bootstrap=0).scores
            for task in scored}}

    return hook


def evaluate_tasks(lm: LoadedModel, config: RunConfig, tasks: list[TrainTaskConfig],
                   prepared: PreparedData, shard: Shard | None = None) -> dict[str, EvalResult]:
    """Score the fine-tuned model on every task's test split: eval/fine-tuned/ for a single
    task, eval/fine-tuned/<task>/ for each task of a mixture. Several processes: each scores
    its share and rank 0 writes the whole (the other ranks get {})."""
    results = {}
    for task in tasks:
        if not task.eval.metrics or not prepared.splits[task.name].test:
            continue
        limit = config.eval.limit or task.eval.limit
        evaluated = evaluation_task(task, config, "test")
        result = evaluate_loaded(lm, evaluated, "fine-tuned", shots=0, limit=limit) \
            if shard is None else evaluate_shared(lm, evaluated, "fine-tuned", shard, limit)
        if result is None:  # not rank 0: its share went to rank 0
            continue
        out = config.run_dir / "eval" / "fine-tuned"
        write_result(result, out / task.name if config.is_mixture else out)
        results[task.name] = result
    return results


def check_retention(lm: LoadedModel, config: RunConfig, kept: list[TaskConfig],
                    before: dict[str, EvalResult], summary: dict[str, Any]) -> tuple[list[Any], bool]:
    """Score the retention suite after training, write retention.json, print the table."""
    after = retention.score_tasks(lm, kept, config.retention.limit, "fine-tuned")
    for name, result in after.items():
        write_result(result, config.run_dir / "eval" / "retention" / name)
    rows = retention.compare(before, after, kept)
    limit = config.retention.max_forgetting
    passed = retention.write_retention(rows, config.run_dir / "retention.json", limit)
    worst = retention.worst_forgetting(rows)
    summary["retention"] = {"worst_forgetting": worst, "max_forgetting": limit, "passed": passed,
                            "significant_drops": retention.significant_drops(rows)}
    print("retention (before -> after training):")
    print(retention_table(rows))
    if not passed:
        print(f"tunelab: FAILED: forgetting {worst:.2f} exceeds retention.max_forgetting {limit:g}")
    return rows, passed


def training_summary(config: RunConfig, counts: ParameterCount, size_on_disk: int,
                     state: LoopState, seconds: float, prepared: PreparedData) -> dict[str, Any]:
    """summary.json's training part: method, sizes, speed, memory, losses, data."""
    logged = [h for h in state.history if "tokens_per_s" in h]
    train_examples = prepared.train_examples
    return {
        "method": config.method["name"],
        "model": config.model.name,
        "trainable_parameters": counts.trainable,
        "total_parameters": counts.total,
        "trainable_percent": counts.percent,
        "size_on_disk_bytes": size_on_disk,
        "steps": state.step,
        "train_seconds": seconds,
        "tokens_seen": state.tokens_seen,
        "computed_tokens": state.computed_tokens,
        "padding_share": (1 - state.tokens_seen / state.computed_tokens
                          if state.computed_tokens else None),
        "tokens_per_s": (sum(h["tokens_per_s"] for h in logged) / len(logged)) if logged else None,
        "peak_memory_mb": peak_memory_mb(),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "out_of_time": state.out_of_time,
        "skipped_steps": state.skipped_steps,
        "truncated_examples": sum(ex.truncated for ex in train_examples),
        "train_examples": len(train_examples),
    }


def mixture_summary(plan: MixturePlan, trainer: Trainer, config: RunConfig,
                    state: LoopState) -> dict[str, Any]:
    """Configured rates vs realised proportions, task epochs, and per-task losses at the best
    evaluation (where negative transfer shows)."""
    seen_by_task = state.task_examples
    total = sum(seen_by_task.values())
    at_best = next((h for h in state.history if h.get("step") == state.best_step and "val_loss" in h),
                   {})
    rows = {}
    for i, task in enumerate(trainer.tasks):
        seen = seen_by_task.get(task.name, 0)
        rows[task.name] = {
            "held_out": task.held_out,
            "train_examples": len(task.train),
            "validation_examples": len(task.validation),
            "rate": plan.rates.get(i),
            "examples_seen": seen,
            "proportion": seen / total if total else 0.0,
            "epochs": seen / len(task.train) if task.train else 0.0,
            "loss_weight": task.loss_weight,
            "best_val_loss": at_best.get("val_loss_by_task", {}).get(task.name),
            "best_metrics": at_best.get("metrics_by_task", {}).get(task.name),
        }
    mixture = config.mixture
    return {"sampling": mixture.sampling, "temperature": mixture.temperature, "cap": mixture.cap,
            "oversample": mixture.oversample, "order": mixture.order, "measure": mixture.measure,
            "stages": [{"tasks": s.tasks, "steps": s.steps} for s in mixture.stages],
            "tasks": rows}
