"""The training tasks of a run config, checked once before anything is loaded.

A single-task run (the `data` section) is a one-task list; a multi-task run lists `tasks:`
and a built-in mixture's tasks. `tunelab train` and `tunelab data inspect` read the same list.
"""

from __future__ import annotations

from tunelab.config import RunConfig, TrainTaskConfig
from tunelab.data.bigbench import natural_instructions_tasks
from tunelab.data.mixture import check_tasks
from tunelab.errors import TunelabError
from tunelab.models.kinds import get_kind


def training_tasks(config: RunConfig) -> list[TrainTaskConfig]:
    """The run's tasks: the `data` section alone, or `tasks` then the built-in mixture's."""
    if not config.is_mixture:
        return [TrainTaskConfig(name=config.name, data=config.data, eval=config.eval)]
    tasks = list(config.tasks)
    builtin = config.mixture.builtin
    if builtin.name is not None:  # config.BuiltinMixture: natural_instructions
        tasks += natural_instructions_tasks(builtin, config.data, config.eval)
    seen: set[str] = set()
    for i, task in enumerate(tasks):
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
