"""Which evaluations `tunelab compare A B` pairs: each side's evaluation directories (a run's
fine-tuned evaluation, every task of a mixture), the task that scored them, and each side's
per-item robustness consistency when a robustness run scored it."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.config import RunConfig, TaskConfig
from tunelab.config.reading import from_dict
from tunelab.core.errors import TunelabError
from tunelab.data.training_tasks import evaluation_task, run_task
from tunelab.eval.runner import TASK_CONFIG, EvalResult, read_result
from tunelab.eval.tasks import check_task, load_task, task_of
from tunelab.runs import EvalDir, RunDir, StudyFiles, System
from tunelab.studies.error_analysis import TaskPair, eval_dirs, read_consistency


def pair_evaluations(a: str | Path, b: str | Path, task: str | TaskConfig | None = None,
                     robustness: str | Path | None = None
                     ) -> tuple[list[TaskPair], dict[str, TaskConfig], tuple[str, str] | None]:
    """(one pair per task, the task that scored each, the two sides' labels when their systems'
    own labels are the same)."""
    sides = [eval_dirs(a), eval_dirs(b)]
    if set(sides[0]) != set(sides[1]) and single_run_tasks(sides):
        # a single-task run names its task after the run: two runs of one config differ
        sides[1] = {next(iter(sides[0])): next(iter(sides[1].values()))}
    if set(sides[0]) != set(sides[1]):
        raise TunelabError(f"A ({a}) scored {', '.join(sides[0])} but B ({b}) scored "
                           f"{', '.join(sides[1])}; compare two evaluations of the same task")
    if task is not None and len(sides[0]) > 1:
        raise TunelabError(f"--task: {a} holds {len(sides[0])} tasks ({', '.join(sides[0])}); "
                           "their own tasks score them, so leave --task out")
    names = list(sides[0])
    tasks = {name: compared_task(name, task, [sides[0][name], sides[1][name]]) for name in names}
    pairs = []
    for name in names:
        results = [read_result(side[name]) for side in sides]
        studies = [StudyFiles(Path(robustness), "robustness")] * 2 if robustness else [
            robustness_of(side[name]) for side in sides]
        consistency = [read_consistency(study, system_names(result, side[name]))
                       if study else None
                       for study, result, side in zip(studies, results, sides, strict=True)]
        if robustness and not any(consistency):
            raise TunelabError(f"--robustness {robustness}: no consistency.jsonl for "
                               f"{results[0].system} or {results[1].system}; give the --out "
                               "directory of a tunelab robustness run that scored them")
        pairs.append(TaskPair(tasks[name], results[0], results[1],
                              (consistency[0], consistency[1])))
    systems = (pairs[0].a.system, pairs[0].b.system)
    folders = (Path(a).resolve().name, Path(b).resolve().name)
    labels = None
    if systems[0] == systems[1] and folders[0] != folders[1]:  # two runs' fine-tuned models
        labels = (systems[0].named(folders[0]).label, systems[1].named(folders[1]).label)
        if labels[0] == labels[1]:  # not fine-tunes: the folders tell them apart
            labels = (f"{labels[0]} ({folders[0]})", f"{labels[1]} ({folders[1]})")
    return pairs, tasks, labels


def system_names(result: EvalResult, folder: Path) -> list[System]:
    """The systems a robustness run may have scored this evaluation's system as: itself, and
    for a run's own fine-tune the same run named, as `tunelab robustness --adapter RUN` does."""
    found = run_config_near(folder)
    return [result.system] + ([result.system.named(found[0].name)] if found else [])


def single_run_tasks(sides: list[dict[str, Path]]) -> bool:
    """Whether both sides hold one evaluation and one of them is a single-task run's (whose
    task is named after the run, so the names say nothing about the items)."""
    if any(len(side) != 1 for side in sides):
        return False
    found = [run_config_near(next(iter(side.values()))) for side in sides]
    return any(f is not None and not f[1].is_mixture for f in found)


def run_config_near(folder: Path) -> tuple[Path, RunConfig] | None:
    """The run directory (and its config) holding an evaluation directory, if any."""
    run = RunDir.holding(folder)
    return (run.root, run.read_config()) if run is not None else None


def compared_task(name: str, task: str | TaskConfig | None, folders: list[Path]) -> TaskConfig:
    """The task that scored evaluations `folders` of task `name`: `task` when given, else the
    one an evaluation's metrics.json records, else its run's, else the built-in task `name`."""
    if task is not None:
        return task_of(task)
    for folder in folders:
        recorded = recorded_task(folder)
        if recorded is not None:
            return recorded
    for folder in folders:
        found = run_config_near(folder)
        if found is None:
            continue
        config = found[1]
        if not config.is_mixture:
            return run_task(config)
        for trained in config.tasks:
            if trained.name == name:
                return evaluation_task(trained, config, "test")
    try:
        return load_task(name)
    except TunelabError:
        raise TunelabError(f"{folders[0]}: cannot tell which task scored it ('{name}' is no "
                           "built-in task and no run config is beside it); pass --task T (a "
                           "task name or YAML file)") from None


def recorded_task(folder: Path) -> TaskConfig | None:
    """The task an evaluation's metrics.json records (`write_result(..., task)`: `tunelab eval
    --out` writes it), checked; None when it records none."""
    metrics = EvalDir(folder).metrics
    try:
        raw = json.loads(metrics.read_text(encoding="utf-8")).get(TASK_CONFIG)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if raw is None:
        return None
    if isinstance(raw, dict):
        raw.pop("origin", None)  # written by tunelab before 2026-12-07; not an option
    try:
        task = from_dict(TaskConfig, raw, f"{metrics}: {TASK_CONFIG}")
        check_task(task)
    except TunelabError as err:
        raise TunelabError(f"{err} (the task it records); pass --task T to name the task "
                           "that scored it") from None
    return task


def robustness_of(folder: Path) -> StudyFiles | None:
    """A run's robustness study (its `robustness:` block), beside an evaluation."""
    found = run_config_near(folder)
    if found is not None and RunDir(found[0]).robustness.folder.is_dir():
        return RunDir(found[0]).robustness
    return None
