"""The training tasks of a run config, checked once before anything is loaded.

A single-task run (the `data` section) is a one-task list; a multi-task run lists `tasks:`
and a built-in mixture's tasks. `tunelab train` and `tunelab data inspect` read the same list.
"""

from __future__ import annotations

from dataclasses import replace

from tunelab.config import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    RunConfig,
    TaskConfig,
    TrainTaskConfig,
)
from tunelab.core.errors import TunelabError
from tunelab.data.bigbench_training import natural_instructions_tasks
from tunelab.data.mixture import check_tasks
from tunelab.data.records import Record
from tunelab.data.templates import get_template_kind
from tunelab.data.transforms.perturbations import (
    augment_records,
    check_severity,
    parse_perturbations,
)
from tunelab.models.kinds import get_kind


def training_tasks(config: RunConfig) -> list[TrainTaskConfig]:
    """The run's tasks: the `data` section alone, or `tasks` then the built-in mixture's."""
    if not config.is_mixture:
        check_augment(config.data.augment, "data.augment")
        check_documents(config.data, config.model.kind, "data.template")
        return [TrainTaskConfig(name=config.name, data=config.data, eval=config.eval)]
    tasks = list(config.tasks)
    builtin = config.mixture.builtin
    if builtin.name is not None:  # config.BuiltinMixture: natural_instructions
        tasks += natural_instructions_tasks(builtin, config.data, config.eval)
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        check_augment(task.data.augment, f"tasks[{i}].data.augment")
        check_documents(task.data, config.model.kind, f"tasks[{i}].data.template")
        if not task.name:
            raise TunelabError(f"tasks[{i}].name is missing; give every task a unique name")
        if task.name in seen:
            raise TunelabError(f"tasks[{i}].name '{task.name}' is used twice; names must be unique")
        seen.add(task.name)
    if not get_kind(config.model.kind).trains_mixtures:
        raise TunelabError(f"model.kind {config.model.kind}: multi-task mixtures (tasks:, "
                           "mixture.builtin) train causal LMs; train it on one `data` section")
    check_tasks([t.name for t in tasks], [t.held_out for t in tasks], [t.weight for t in tasks],
                config.mixture)
    return tasks


def check_documents(data: DataConfig, model_kind: str, option: str) -> None:
    """A template of raw documents (text) trains a model kind that trains on documents."""
    kind = get_kind(model_kind)
    if get_template_kind(data.template).trains_documents and not kind.trains_documents:
        raise TunelabError(f"{option} {data.template}: model.kind {kind.name} does not train "
                           "on raw documents; use model.kind causal (a decoder LM)")


def with_packing(task: TrainTaskConfig, can_pack: bool) -> TrainTaskConfig:
    """The task with data.packing settled: as set, or (unset) the template kind's default
    where the model kind and method can pack (`can_pack`), else off."""
    if task.data.packing is not None:
        return task
    packing = get_template_kind(task.data.template).packs_by_default and can_pack
    return replace(task, data=replace(task.data, packing=packing))


def check_augment(augment: AugmentConfig, option: str) -> None:
    """data.augment's perturbations, severity and share, checked before any loading."""
    if not augment.perturbations:
        return
    parse_perturbations(augment.perturbations, f"{option}.perturbations")
    check_severity(augment.severity, f"{option}.severity")
    if not 0 <= augment.share <= 1:
        raise TunelabError(f"{option}.share {augment.share:g}: must be between 0 and 1 (the "
                           "fraction of training inputs perturbed), e.g. 0.3")


def augmented(records: list[Record], augment: AugmentConfig) -> list[Record]:
    """data.augment: a seeded share of the training inputs perturbed (validation and test stay
    clean); the records unchanged without it."""
    if not augment.perturbations:
        return records
    chosen = parse_perturbations(augment.perturbations, "data.augment.perturbations")
    severity = check_severity(augment.severity, "data.augment.severity")
    return augment_records(records, chosen, augment.share, severity, augment.seed)


def run_task(config: RunConfig, eval_config: EvalConfig | None = None) -> TaskConfig:
    """The evaluation task a single-task training config implies: its data and eval section,
    scored with the model kind's output type (a classifier's head: classification)."""
    task = TrainTaskConfig(name=config.name, data=config.data, eval=eval_config or config.eval)
    return evaluation_task(task, config, "test")


def evaluation_task(task: TrainTaskConfig, config: RunConfig, split: str) -> TaskConfig:
    """A training task as an evaluation task on one of its splits: the model kind's output
    type, as its template kind scores it (text: perplexity of the held-out documents)."""
    evaluated = TaskConfig(name=task.name, data=task.data, split=split, eval=task.eval,
                           output_type=get_kind(config.model.kind).default_output_type)
    return get_template_kind(task.data.template).evaluation(evaluated)
