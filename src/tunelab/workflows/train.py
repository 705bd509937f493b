"""`tunelab train`: the whole run, top to bottom, in one place.

    check the run directory -> resolve the method and tasks -> load the model
    -> score the retention suite, robustness and bias probes before training -> prepare the
    data (augmented when data.augment says so) -> apply the method -> fit -> save -> merge
    where the method merges (`scoring_form`) -> evaluate every task's test split -> retention, robustness and bias after -> summary -> report

A single-task run (the `data` section) is a one-task list, so both kinds of run take the same
path; only the batch plan (a seeded permutation, or the mixture's plan) and where per-task
results go differ, and the data decides both (`TrainingData`). Everything scored at an
evaluation step during training is an eval hook on the Trainer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tunelab.config import RunConfig, TaskConfig, TrainTaskConfig, load_run_config
from tunelab.core import launch
from tunelab.core.deferred import deferred, dist, transformers
from tunelab.core.errors import TunelabError
from tunelab.data import Splits
from tunelab.data.checks import DataCheck
from tunelab.data.mixture import MixturePlan
from tunelab.data.training_tasks import evaluation_task, run_task, training_tasks, with_packing
from tunelab.eval.runner import EvalResult, evaluate_loaded, evaluate_shared, write_result
from tunelab.eval.shard import Shard
from tunelab.eval.tasks import TaskItems, check_task, read_task
from tunelab.methods import get_method, trainable_parameters
from tunelab.methods.base import Method, ParameterCount, directory_size, parse_options
from tunelab.models import LoadedModel, get_kind
from tunelab.models.kinds import ModelKind
from tunelab.models.known_weights import remember_loaded
from tunelab.report.markdown import write_run_report
from tunelab.report.run_page import write_html_report
from tunelab.runs import RunDir, System
from tunelab.runs.run_dir import RunRecipe, scoring_form
from tunelab.runs.start import FromBase, Start, start_record
from tunelab.studies import domain, retention
from tunelab.studies.bias import RunBias
from tunelab.studies.retention import RetentionRow, retention_table
from tunelab.studies.robustness import RunRobustness
from tunelab.studies.stage_matrix import RunStages
from tunelab.training.data import PreparedData, prepare_data, read_splits
from tunelab.training.watch import ValidationWatch, check_watched
from tunelab.workflows.data_check import data_check_summary, guard_run_data

if TYPE_CHECKING:
    import torch

    from tunelab.training import checkpoint, loop
    from tunelab.training.checkpoint import LoopState
    from tunelab.training.loop import EvalHook, Trainer
else:  # they use torch as they are imported; a run's plan is checked before it loads
    checkpoint = deferred("tunelab.training.checkpoint")
    loop = deferred("tunelab.training.loop")


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict[str, Any]  # Any: summary.json (JSON values)
    evaluation: EvalResult | None
    """The test-split evaluation of a single-task run."""
    task_evaluations: dict[str, EvalResult] = field(default_factory=dict)
    """A multi-task run's test-split evaluation per task (eval/fine-tuned/<task>/)."""
    retention: list[RetentionRow] = field(default_factory=list)
    """RetentionRow per retention task: score before and after training, change, 95% CI."""
    passed: bool = True
    """False when retention dropped by more than retention.max_forgetting."""


def check_train(config: RunConfig | str | Path, overrides: list[str] | None = None,
                resume: bool = False) -> None:
    """Everything `train` checks before a model loads (the run directory, the method and its
    options, the data, leakage into test), without training: `tunelab train --nproc N` runs
    it before it starts the processes, so a bad input is one line, not N."""
    config = _resolve_config(config, overrides)
    RunDir(config.run_dir).check_start(config, resume)
    plan_run(config)


def train(config: RunConfig | str | Path, overrides: list[str] | None = None,
          resume: bool = False, evaluate_after: bool = True,
          on_eval: ValidationWatch | None = None) -> TrainResult:
    """Fine-tune as the config says and write a run directory.

    Args:
        config: a RunConfig, or a YAML file path.
        overrides: ``key=value`` strings applied on top (``train.lr=1e-4``).
        resume: continue an interrupted run from its last checkpoint.
        evaluate_after: score the fine-tuned model on every task's test split.
        on_eval: a search's trial (`training/watch.py`): hears every validation record and
            may end training; the run reads train and validation only (test sealed).
    """
    config = _resolve_config(config, overrides)
    if on_eval is not None:
        check_watched(config, evaluate_after)
    run = RunDir(config.run_dir)
    if first_process():  # several processes: rank 0 checks, writes and cleans up
        run.check_start(config, resume)
    existed = run.root.exists()
    try:
        with on_sigterm(_stop):
            plan = plan_run(config, with_test=on_eval is None)
            return _train(plan, run, resume, evaluate_after, on_eval)
    except BaseException:
        if not resume and first_process():
            with on_sigterm(signal.SIG_IGN):  # the clean-up finishes
                run.undo_failed_start(existed)
        raise
    finally:
        end_process_group()  # this process's part ends here, not at interpreter exit


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def on_sigterm(handler: Callable[[int, FrameType | None], object] | signal.Handlers
               ) -> Iterator[None]:
    """Several processes: when one fails, torchrun stops the others with SIGTERM. While
    training, `_stop` ends the process as an exception does, so rank 0 still removes a failed
    start; while removing it, SIG_IGN lets the clean-up finish."""
    if not launch.launched() or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def end_process_group() -> None:
    """Destroy the process group training made; none where torch never loaded (a run that
    failed its checks), and reading `dist` would import it."""
    if "torch.distributed" in sys.modules and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def first_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class RunPlan:
    """The config resolved once, before anything loads: every step of the run receives it."""

    config: RunConfig
    method: Method[Any]  # Any: each method has its own options type
    options: object
    """The method's options dataclass (`parse_options`)."""
    kind: ModelKind
    tasks: list[TrainTaskConfig]
    """The tasks trained on (a single-task run: one)."""
    evaluated: dict[str, TaskConfig]
    """Each task with metrics as the evaluation task of its test split, by name."""
    splits: dict[str, Splits]
    """Every task's data, read and checked (`training/data.read_splits`)."""
    retained: list[TaskConfig]
    """The retention suite, scored before and after training."""
    retained_items: dict[str, TaskItems]
    """Each retention task's data, read and checked once (every scoring of it reuses it)."""
    single: TaskConfig | None
    """A single-task run's evaluation task (the robustness and bias blocks score it)."""
    data_check: DataCheck | None = None
    """Duplicates and leakage found before training (`guard_run_data`)."""
    start: Start = field(default_factory=FromBase)
    """Where training starts: the base, or model.init_from's run continued or merged."""
    stages: RunStages | None = None
    """A model.init_from run's lineage and every stage's task (the stage x task matrix)."""


def plan_run(config: RunConfig, with_test: bool = True) -> RunPlan:
    """Resolve and check everything the run will use, before any model loads: the method and
    its options, the model kind, the tasks (with their data read) and the retention suite.
    `with_test=False` (a search's trial): every test split is sealed and `evaluated` scores
    the validation split."""
    method = get_method(config.method["name"])
    options = parse_options(method, config.method)
    kind = get_kind(config.model.kind)
    start = RunDir(config.run_dir).start(config)  # model.init_from, checked before any loading
    # checked before any loading; data.packing unset: the template kind's default where it packs
    can_pack = kind.packs and method.supports_packing
    tasks = [with_packing(t, can_pack) for t in training_tasks(config)]
    if any(t.data.packing for t in tasks):
        if not kind.packs:
            raise TunelabError(f"data.packing: model.kind {config.model.kind} trains on padded "
                               "batches; packing is for causal models; turn it off")
        if not method.supports_packing:
            raise TunelabError(f"data.packing: not with method {method.name} (its virtual "
                               "tokens would be shared by every example of a packed row); "
                               "turn it off")
    if config.train.gradient_checkpointing and not method.supports_checkpointing:
        raise TunelabError(f"train.gradient_checkpointing: not with method {method.name}; "
                           "turn it off for this method")
    split = "test" if with_test else "validation"
    evaluated = {t.name: evaluation_task(t, config, split) for t in tasks if t.eval.metrics}
    for task in evaluated.values():  # every metric name, before any loading
        check_task(task)
    splits = read_splits(tasks, with_test)  # every data file read and checked before loading
    retained = retention.retention_tasks(config.retention, config.model.kind)
    retained_items = {task.name: read_task(task, 0) for task in retained}  # read once here
    checked = None
    if with_test:  # leakage into test stops the run here (a search's trial: tune checked it)
        checked, splits = guard_run_data(config, tasks, splits, retained_items)
    single = None if config.is_mixture else evaluated.get(config.name) or run_task(config)
    stages = RunStages.of(config, start, RunDir(config.run_dir), evaluated) if with_test else None
    return RunPlan(config, method, options, kind, tasks, evaluated, splits, retained,
                   retained_items, single, checked, start, stages)


def _train(plan: RunPlan, run: RunDir, resume: bool, evaluate_after: bool,
           on_eval: ValidationWatch | None = None) -> TrainResult:
    config, method, tasks, kept = plan.config, plan.method, plan.tasks, plan.retained
    if first_process():  # rank 0 alone makes the run directory (and removes a failed start)
        run.check_writable()
    robust = RunRobustness.of(config.robustness, plan.single)  # items perturbed before loading
    bias = RunBias.of(config.bias, plan.single)
    transformers.set_seed(config.train.seed)
    lm = plan.start.load(config)  # the base (model.kind picks the class) or model.init_from
    if plan.start.earlier is not None:
        print(f"tunelab: {plan.start.describe()}")
    before = {}
    if kept:  # before the method touches the model; cached per base model
        print(f"tunelab: retention suite before training: {', '.join(t.name for t in kept)}")
        before = retention.base_scores(lm, config.model, kept, config.retention.limit,
                                        plan.retained_items)
    documents = domain.document_tasks(plan.evaluated) if evaluate_after else {}
    domain_before = domain.score(lm, documents, config.eval.limit, System.base())  # raw text
    robust_before = robust.score(lm, System.base()) if robust else None
    bias_before = bias.score(lm, System.base()) if bias else None
    stages_before = plan.stages.before(lm) if plan.stages and evaluate_after and \
        first_process() else {}  # the previous stage's model on this run's tasks
    prepared = prepare_data(config, lm, tasks, plan.splits)  # before the method changes lm

    model = plan.start.apply(lm, method, plan.options, plan.kind)  # or init_from's adapter
    counts = trainable_parameters(model)
    print(f"tunelab: {config.method['name']} on {config.model.name}: {counts}")
    if first_process():
        run.write_config(config)
        if plan.data_check is not None:
            run.data_check.write_text(json.dumps(plan.data_check.to_json(), indent=1,
                                                 default=str))
    trainer = loop.Trainer(model, config.train, prepared.data, run)
    if config.is_mixture and config.mixture.eval_limit > 0:
        trainer.eval_hooks.append(task_metric_hook(lm, tasks, prepared, config))
    if kept and config.retention.every_eval:
        trainer.eval_hooks.append(retention.curve_hook(lm, kept, config.retention.limit,
                                                        plan.retained_items))
    if on_eval is not None:  # a search's trial: its validation curve, and pruning
        on_eval.attach(trainer, lm, plan.evaluated, plan.splits, config.eval.limit)
    if resume:
        trainer.resume()
    start = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - start
    shard = Shard.of(trainer.accelerator)  # several processes: each scores a share
    if not trainer.accelerator.is_main_process:  # rank 0 alone writes
        if evaluate_after:
            lm.model = scoring_form(method, trainer.trained_model())
            evaluate_tasks(lm, plan, run, prepared, shard)
        return TrainResult(run.root, {}, None, {}, [], True)

    model = trainer.trained_model()
    weights_dir = run.weights(method)
    checkpoint.write_atomically(weights_dir, lambda tmp: method.save(model, tmp))
    size_on_disk = directory_size(weights_dir)  # the trained weights alone
    lm.tokenizer.save_pretrained(str(run.tokenizer))
    if (weights_dir / "config.json").is_file():  # a complete model: make it loadable alone
        lm.tokenizer.save_pretrained(str(weights_dir))
    summary = training_summary(config, counts, size_on_disk, state, seconds, prepared)
    summary["placement"] = trainer.placement
    summary["precision"] = trainer.precision.name  # train.precision auto: what it chose here
    summary.update(start_record(plan.start))  # init_from and the lineage of earlier runs
    if plan.data_check is not None:
        summary["data_check"] = data_check_summary(plan.data_check)
    if isinstance(trainer.plan, MixturePlan):
        summary["mixture"] = mixture_summary(trainer.plan, trainer, config, state)

    lm.model = scoring_form(method, model)  # saved: merged now where the method merges
    lm.recipe = RunRecipe(str(run.root), None, scoring=True)  # what --nproc's workers load
    remember_loaded(lm.recipe, lm.model)  # `--adapter RUN` then loads nothing where all is cached
    evaluations = evaluate_tasks(lm, plan, run, prepared, shard) if evaluate_after else {}
    evaluation = None if config.is_mixture else evaluations.get(config.name)
    if config.is_mixture and evaluate_after:
        summary["test_scores"] = {name: r.scores for name, r in evaluations.items()}
    harm = {name: r.harm.to_json() for name, r in evaluations.items() if r.harm}
    if harm:  # free-text tasks: the share of outputs flagged offensive / hurtful
        summary["test_harm"] = harm
    if plan.stages is not None and evaluate_after:  # every earlier stage's task, scored again
        matrix = plan.stages.finish(lm, stages_before, evaluations)
        summary["stages"] = matrix.data
        print("stage x task (each stage paired against the stage before it):")
        print(matrix.table())
    if domain_before:  # the held-out documents before -> after, paired per document
        domain.write_before(run, domain_before, config.is_mixture)
        domain_rows = domain.compare(domain_before, evaluations, documents)
        summary["domain"] = domain.summary_entry(domain_rows)
        # what scored "before": the base, or model.init_from's run merged in (its start)
        summary["domain"]["before"] = ("the base model" if plan.start.on_base else
                                       f"the starting model ({plan.start.describe()})")
        print("domain text (held-out documents, before -> after training):")
        print(domain.domain_table(domain_rows))
    rows: list[RetentionRow] = []
    passed = True
    if kept:
        rows, passed = check_retention(lm, config, run, kept, before, summary,
                                       plan.retained_items)
    robust_report = robust.finish(robust_before, robust.score(lm, System.tuned()), run,
                                  summary) if robust and robust_before else None
    bias_report = bias.finish(bias_before, bias.score(lm, System.tuned()), run,
                              summary) if bias and bias_before else None
    run.summary.write_text(json.dumps(summary, indent=1))
    task_evaluations = evaluations if config.is_mixture else {}
    write_run_report(run, config, summary, evaluation, task_evaluations, rows,
                     robust_report, bias_report)
    write_html_report(run.root)
    return TrainResult(run.root, summary, evaluation, task_evaluations, rows, passed)


def _resolve_config(config: RunConfig | str | Path, overrides: list[str] | None) -> RunConfig:
    if not isinstance(config, RunConfig):
        return load_run_config(config, overrides)
    if overrides:
        raise TunelabError("overrides apply to a config file; edit the RunConfig object instead")
    return config


def task_metric_hook(lm: LoadedModel, tasks: list[TrainTaskConfig], prepared: PreparedData,
                     config: RunConfig) -> EvalHook:
    """An eval hook: every mixture task's metric on its validation split
    (mixture.eval_limit items), each scored as its evaluation task scores it."""
    limit = config.mixture.eval_limit
    scored = [evaluation_task(t, config, "validation")
              for t, ex in zip(tasks, prepared.data.tasks, strict=True)
              if ex.validation and t.eval.metrics]

    def hook(model: torch.nn.Module) -> dict[str, dict[str, dict[str, float]]]:
        view = lm.with_model(model)
        return {"metrics_by_task": {
            task.name: evaluate_loaded(view, task, System.tuned(), shots=0, limit=limit,
                                       bootstrap=0).scores
            for task in scored}}

    return hook


def evaluate_tasks(lm: LoadedModel, plan: RunPlan, run: RunDir, prepared: PreparedData,
                   shard: Shard | None = None) -> dict[str, EvalResult]:
    """Score the fine-tuned model on every task's test split: eval/fine-tuned/ for a single
    task, eval/fine-tuned/<task>/ for each task of a mixture. Several processes: each scores
    its share and rank 0 writes the whole (the other ranks get {})."""
    results = {}
    system = System.tuned()
    out = run.eval_dir(system)
    for name, evaluated in plan.evaluated.items():
        if not prepared.splits[name].test:
            continue
        limit = plan.config.eval.limit or evaluated.eval.limit
        result = evaluate_loaded(lm, evaluated, system, shots=0, limit=limit) \
            if shard is None else evaluate_shared(lm, evaluated, system, shard, limit)
        if result is None:  # not rank 0: its share went to rank 0
            continue
        write_result(result, out.task(name) if plan.config.is_mixture else out)
        results[name] = result
    return results


def check_retention(lm: LoadedModel, config: RunConfig, run: RunDir, kept: list[TaskConfig],
                    before: dict[str, EvalResult],
                    summary: dict[str, Any],  # Any: summary.json's JSON values
                    items: dict[str, TaskItems]) -> tuple[list[RetentionRow], bool]:
    """Score the retention suite after training, write retention.json, print the table."""
    after = retention.score_tasks(lm, kept, config.retention.limit, System.tuned(),
                                  items)
    for name, result in after.items():
        write_result(result, run.retention_eval(name))
    rows = retention.compare(before, after, kept)
    limit = config.retention.max_forgetting
    passed = retention.write_retention(rows, run.retention.json, limit)
    worst = retention.worst_forgetting(rows)
    summary["retention"] = {"worst_forgetting": worst, "max_forgetting": limit, "passed": passed,
                            "significant_drops": retention.significant_drops(rows)}
    print("retention (before -> after training):")
    print(retention_table(rows))
    if not passed:
        print(f"tunelab: FAILED: forgetting {worst:.2f} exceeds retention.max_forgetting {limit:g}")
    return rows, passed


def training_summary(config: RunConfig, counts: ParameterCount, size_on_disk: int,
                     state: LoopState, seconds: float, prepared: PreparedData
                     ) -> dict[str, Any]:  # Any: summary.json's JSON values
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
        "peak_memory_mb": loop.peak_memory_mb(),
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "out_of_time": state.out_of_time,
        "skipped_steps": state.skipped_steps,
        "truncated_examples": sum(ex.truncated for ex in train_examples),
        "train_examples": len(train_examples),
    }


def mixture_summary(plan: MixturePlan, trainer: Trainer, config: RunConfig,
                    state: LoopState) -> dict[str, object]:
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
