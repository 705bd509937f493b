"""Multi-task runs around the loop: the tasks a config lists (plus a built-in mixture),
tokenised per task; the per-task metric scored at every evaluation; the per-task test
evaluation after training; and the mixture section of summary.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, TaskConfig, TrainTaskConfig
from tunelab.data import Splits, get_template, load_splits, tokenize_example
from tunelab.data.mixture import (
    MEASURES,
    ORDERS,
    MixtureData,
    MixturePlan,
    TaskExamples,
    length_difficulty,
    resolve_stages,
    sampling_rates,
)
from tunelab.data.tokenize import TokenizedExample
from tunelab.errors import TunelabError
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.models import LoadedModel
from tunelab.models.kinds import find_kind

BUILTIN_MIXTURES = ("natural_instructions",)


def mixture_tasks(config: RunConfig) -> list[TrainTaskConfig]:
    """The run's tasks: `tasks`, then those of the built-in mixture, checked."""
    tasks = list(config.tasks)
    builtin = config.mixture.builtin
    if builtin.name is not None:
        if builtin.name not in BUILTIN_MIXTURES:
            raise TunelabError(f"mixture.builtin.name '{builtin.name}': unknown; built-in "
                               f"mixtures are: {', '.join(BUILTIN_MIXTURES)}")
        from tunelab.data.bigbench import natural_instructions_tasks

        tasks += natural_instructions_tasks(builtin, config.data, config.eval)
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if not task.name:
            raise TunelabError(f"tasks[{i}].name is missing; give every task a unique name")
        if task.name in seen:
            raise TunelabError(f"tasks[{i}].name '{task.name}' is used twice; names must be unique")
        seen.add(task.name)
    check_mixture(config, tasks)
    return tasks


def check_mixture(config: RunConfig, tasks: list[TrainTaskConfig]) -> None:
    """Fail on a bad mixture option before anything is read or written."""
    mixture = config.mixture
    kind = find_kind(config.model.kind)
    if kind is None or not kind.trains_mixtures:
        raise TunelabError(f"model.kind {config.model.kind}: multi-task mixtures (tasks:, "
                           "mixture.builtin) train causal LMs; train it on one `data` section")
    if mixture.order not in ORDERS:
        raise TunelabError(f"mixture.order '{mixture.order}': use one of {', '.join(ORDERS)}")
    if mixture.measure not in MEASURES:
        raise TunelabError(f"mixture.measure '{mixture.measure}': use one of {', '.join(MEASURES)}")
    trained = [i for i, t in enumerate(tasks) if not t.held_out]
    if not trained:
        raise TunelabError("tasks: every task is held out; train on at least one")
    sampling_rates([1] * len(trained), [tasks[i].weight for i in trained],
                   [tasks[i].name for i in trained], mixture)
    resolve_stages(mixture.stages, [t.name for t in tasks], trained)


def prepare_mixture(config: RunConfig, lm: LoadedModel,
                    tasks: list[TrainTaskConfig]) -> tuple[MixtureData, dict[str, Splits]]:
    """Read, split and tokenise every task (held-out tasks: validation and test only).

    With order=easy_to_hard and measure=loss this scores every training example with the
    base model, so call it before the method changes the model.
    """
    examples, splits_by_task = [], {}
    for task in tasks:
        splits = load_splits(task.data)
        template = get_template(task.data, lm.tokenizer)

        def tokenize(records: list, task: TrainTaskConfig = task, template: Any = template
                     ) -> list[TokenizedExample]:
            return [tokenize_example(template.render(r), lm.tokenizer, task.data.max_length)
                    for r in records]

        train = [] if task.held_out else splits.train[:task.max_train_examples]
        if not task.held_out and not train:
            raise TunelabError(f"task '{task.name}': the train split is empty; check its data "
                               "source, split sizes and max_train_examples")
        examples.append(TaskExamples(task.name, tokenize(train), tokenize(splits.validation),
                                     loss_weight=task.loss_weight, weight=task.weight,
                                     held_out=task.held_out))
        splits_by_task[task.name] = splits
    if config.mixture.order == "easy_to_hard":
        for task_examples in examples:
            task_examples.difficulty = difficulty(task_examples.train, config.mixture.measure, lm,
                                                  config.train.batch_size)
    metrics = None
    if config.mixture.eval_limit > 0:
        scored = [t for t, ex in zip(tasks, examples, strict=True) if ex.validation and t.eval.metrics]
        metrics = task_metric_hook(lm, scored, config.mixture.eval_limit)
    return MixtureData(examples, lm.tokenizer.pad_token_id, config.mixture, metrics), splits_by_task


def difficulty(examples: list[TokenizedExample], measure: str, lm: LoadedModel,
               batch_size: int) -> list[float]:
    """length: tokens; loss: the base model's mean NLL per completion token."""
    if measure == "length" or not examples:
        return length_difficulty(examples)
    from tunelab.eval.loglikelihood import completion_nll

    scored = completion_nll(lm.model, examples, lm.tokenizer.pad_token_id, batch_size)
    return [nll / max(count, 1) for nll, count in scored]


def task_metric_hook(lm: LoadedModel, tasks: list[TrainTaskConfig],
                     limit: int) -> Callable[[Any], dict[str, dict[str, float]]]:
    """A function scoring a model on every task's metric (validation split, `limit` items)."""

    def score(model: Any) -> dict[str, dict[str, float]]:
        view = LoadedModel(model=model, tokenizer=lm.tokenizer, path=lm.path, kind=lm.kind)
        out = {}
        for task in tasks:
            spec = TaskConfig(name=task.name, data=task.data, split="validation", eval=task.eval)
            out[task.name] = evaluate_loaded(view, spec, "validation", shots=0, limit=limit,
                                             bootstrap=0).scores
        return out

    return score


def evaluate_tasks(lm: LoadedModel, tasks: list[TrainTaskConfig], splits: dict[str, Splits],
                   run_dir: Path, limit: int | None) -> dict[str, EvalResult]:
    """Score the fine-tuned model on every task's test split; eval/fine-tuned/<task>/."""
    results = {}
    for task in tasks:
        if not task.eval.metrics or not splits[task.name].test:
            continue
        spec = TaskConfig(name=task.name, data=task.data, split="test", eval=task.eval)
        result = evaluate_loaded(lm, spec, "fine-tuned", shots=0, limit=limit or task.eval.limit)
        write_result(result, run_dir / "eval" / "fine-tuned" / task.name)
        results[task.name] = result
    return results


def mixture_summary(plan: MixturePlan, tasks: list[TaskExamples], config: RunConfig,
                    task_examples: dict[str, int], history: list[dict[str, Any]],
                    best_step: int | None) -> dict[str, Any]:
    """Configured rates vs realised proportions, task epochs, and per-task losses at the best
    evaluation (where negative transfer shows)."""
    total = sum(task_examples.values())
    at_best = next((h for h in history if h.get("step") == best_step and "val_loss" in h), {})
    rows = {}
    for i, task in enumerate(tasks):
        seen = task_examples.get(task.name, 0)
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
