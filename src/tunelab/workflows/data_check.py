"""`tunelab data check` and the leakage guard of `tunelab train`.

    a run config (or a data file, or a task) -> its sets: each task's train / validation /
    test split, and every evaluation task, retention task and BBQ set the config scores (and
    each --against task) -> data/checks: overlap, conflicts, quality, label errors -> a table,
    data_check.json, and with --fix a copy without duplicates and leaked items

`tunelab train` runs the overlap part before any model loads (`guard_run_data`): test items in
the training data stop the run unless data.dedup drops them or data.allow_leakage allows them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunelab.config import RunConfig, TrainTaskConfig, load_run_config, load_yaml
from tunelab.core.errors import TunelabError
from tunelab.data import Splits, get_template, load_splits
from tunelab.data.checks import (
    DATA,
    EVALUATED,
    SPLIT_ROLES,
    CheckItem,
    CheckOptions,
    CheckSet,
    Crossing,
    DataCheck,
    check_sets,
    split_sets,
)
from tunelab.data.checks.overlap import detectors
from tunelab.data.checks.quality import label_set
from tunelab.data.sources import read_records
from tunelab.data.tokenize import TokenizedExample, tokenize_record
from tunelab.data.training_tasks import training_tasks
from tunelab.eval.datasets.bbq import bbq_items
from tunelab.eval.tasks import TaskItems, is_suite, load_suite, load_task, read_task
from tunelab.models import get_kind
from tunelab.models.loader import load_tokenizer
from tunelab.studies import retention
from tunelab.training.data import read_splits

RUN_ONLY = {"method", "model", "train", "tasks", "mixture", "retention"}
"""Sections of a run config that a task file never has."""


@dataclass
class CheckTarget:
    """What one `tunelab data check` looks at, before the detectors run."""

    sets: list[CheckSet]
    labels: list[str] | None
    notes: list[str] = field(default_factory=list)
    config: RunConfig | None = None
    source: Path | None = None
    """A lone data file (`--fix` writes it without its duplicates)."""

    def inputs(self) -> list[Path]:
        """The files the checked data was read from (`--fix` never writes over them)."""
        files = [self.source] if self.source is not None else []
        if self.config is not None:
            for task in training_tasks(self.config):
                data = task.data
                files += [Path(f) for f in (data.source, data.train_file, data.validation_file,
                                            data.test_file) if f and Path(f).suffix]
        return files


def data_check(target: str | Path, overrides: Sequence[str] = (), against: Sequence[str] = (),
               fix: str | Path | None = None, out: str | Path | None = "data_check.json",
               threshold: float | None = None, label_errors: bool = True,
               fields: dict[str, str] | None = None) -> DataCheck:
    """Check a run config's data (or a data file, or a task's splits); write `out` (JSON) and,
    with `fix`, a copy without duplicates and leaked items (the input is never touched)."""
    found = check_target(target, list(overrides), fields or {})
    for name in against:
        found.sets += against_sets(name)
    if threshold is not None and not 0 <= threshold <= 1:
        raise TunelabError(f"--threshold {threshold:g}: give a Jaccard similarity from 0 to 1 "
                           "(e.g. 0.8; 0 turns near duplicates off)")
    if fix:
        fixed_paths(found, Path(fix))  # a path that would overwrite an input: before any work
    options = CheckOptions(
        threshold=threshold if threshold is not None else (
            found.config.data.near_duplicates if found.config else 0.8),
        labels=found.labels, label_errors=label_errors, tokenize=_tokenizer(found.config))
    check = check_sets(found.sets, options, found.notes)
    if out:
        Path(out).write_text(json.dumps(check.to_json(), indent=1, default=str))
    if fix:
        write_fixed(check, found, Path(fix))
    return check


def check_target(target: str | Path, overrides: list[str], fields: dict[str, str]
                 ) -> CheckTarget:
    """A run config (YAML with a model/data/method), a data file, or a task name/file."""
    path = Path(target)
    if path.suffix.lower() in (".yaml", ".yml"):
        if fields:
            raise TunelabError("--fields: a run config or task file maps columns in "
                               "data.fields")
        if RUN_ONLY & set(load_yaml(path)):  # a task file has none of these sections
            return config_target(load_run_config(path, overrides))
        return task_target(str(path))
    if path.exists() or ":" in str(target):
        if overrides:
            raise TunelabError(f"{target}: key=value overrides apply to a run config")
        records = read_records(str(target), fields=fields)
        data = CheckSet.of(path.name, DATA, records)
        return CheckTarget([data], label_set([data], None), source=path)
    return task_target(str(target))


def config_target(config: RunConfig) -> CheckTarget:
    tasks = training_tasks(config)
    sets: list[CheckSet] = []
    for task in tasks:
        sets += task_sets(task, load_splits(task.data), len(tasks) > 1)
    notes: list[str] = []
    for kept in retention.retention_tasks(config.retention, config.model.kind):
        sets.append(_items_set(f"retention:{kept.name}", read_task(kept, 0)))
    if config.bias.bbq:
        sets += bbq_sets(config.bias.bbq_categories, notes)
    own = [s for s in sets if s.role.own]  # not a benchmark's or retention task's outputs
    labels = None if config.is_mixture else label_set(own, config.eval.labels)
    return CheckTarget(sets, labels, notes, config)


def task_sets(task: TrainTaskConfig, splits: Splits, named: bool) -> list[CheckSet]:
    """A training task's splits as sets (`split_sets`); a multi-task run names each
    `task/split`."""
    return split_sets(splits, f"{task.name}/" if named else "", task.held_out)


def task_target(name: str) -> CheckTarget:
    """A task's own splits (a benchmark's census): each split checked as the run would see it."""
    task = load_task(name)
    items = read_task(task, 0)
    sets = [CheckSet.of(f"{task.name}/{split}", SPLIT_ROLES.get(split, EVALUATED), records)
            for split, records in items.data.splits.items() if records]
    return CheckTarget(sets, label_set(sets, task.eval.labels))


def against_sets(name: str) -> list[CheckSet]:
    """An --against task (or every task of a suite): the split it scores."""
    names = load_suite(name).tasks if is_suite(name) else [name]
    return [_items_set(f"task:{task.name}", read_task(task, 0))
            for task in (load_task(n) for n in names)]


def _items_set(name: str, items: TaskItems) -> CheckSet:
    return CheckSet.of(name, EVALUATED, items.records)


def bbq_sets(categories: Sequence[str], notes: list[str]) -> list[CheckSet]:
    """The BBQ-lite items the run's bias block scores; a one-line note when not fetched."""
    try:
        found = bbq_items(list(categories) or None)
    except TunelabError as err:
        notes.append(f"BBQ-lite not checked: {err}")
        return []
    return [CheckSet.of("bbq", EVALUATED, [item.record for item in found])]


def _tokenizer(config: RunConfig | None) -> Callable[[CheckItem], TokenizedExample] | None:
    """The run's template and tokenizer over one item (a single-task config), else None."""
    if config is None or config.is_mixture:
        return None
    tokenizer = load_tokenizer(config.model)
    template = get_template(config.data, tokenizer)
    kind = get_kind(config.model.kind)

    def tokenize(item: CheckItem) -> TokenizedExample:
        assert item.record is not None
        return tokenize_record(item.record, template, tokenizer, kind, config.data.max_length,
                               config.eval.labels)

    return tokenize


def fixed_paths(found: CheckTarget, out: Path) -> dict[str, Path]:
    """Where `--fix OUT` writes each of the checked data's own sets: the trained set at OUT,
    a config's validation and test splits beside it. Refused in one line, before anything is
    written: OUT not .jsonl, several trained sets, or a path that is one of the inputs."""
    if out.suffix.lower() != ".jsonl":
        raise TunelabError(f"--fix {out}: the copy is written as JSON lines; name it .jsonl")
    own = [s for s in found.sets if s.role.own]
    if sum(s.role.trained for s in own) > 1:
        raise TunelabError(f"--fix {out}: a multi-task run has several training splits; fix "
                           "one task's data file at a time (tunelab data check FILE --fix)")
    paths = {s.name: out if s.role.trained else out.with_name(
        f"{out.stem}.{s.name.replace('/', '.')}{out.suffix}") for s in own}
    inputs = {p.resolve() for p in found.inputs()}
    for path in paths.values():
        if path.resolve() in inputs:
            raise TunelabError(f"--fix {out}: would overwrite the input {path}; write the copy "
                               "to a new file (the input is never changed)")
    return paths


def write_fixed(check: DataCheck, found: CheckTarget, out: Path) -> list[Path]:
    """The trained set without the dropped items at `out`; a config's validation and test
    splits beside it unchanged (train with data.train_file/validation_file/test_file). Each
    row is the source's own row, so the same data.fields read it."""
    paths = fixed_paths(found, out)
    for checked in found.sets:
        if checked.name not in paths:
            continue
        dropped = check.drop.get(checked.name, set())
        rows = [item.record.columns if item.record is not None else {} for item in checked.items
                if item.index not in dropped]
        paths[checked.name].write_text("".join(json.dumps(row, default=str) + "\n"
                                               for row in rows))
    return list(paths.values())


def guard_run_data(config: RunConfig, tasks: Sequence[TrainTaskConfig],
                   splits: dict[str, Splits], scored: dict[str, TaskItems],
                   apply_dedup: bool = True) -> tuple[DataCheck, dict[str, Splits]]:
    """`tunelab train`'s check before a model loads: duplicates and leakage of every task's
    splits and the retention tasks (`scored`). A task with data.dedup loses the dropped
    training examples; test items in the training data stop the run unless
    data.allow_leakage (a leak into another task's test split counts too). What was decided
    is noted in the check (report.html shows it). Returns the check and the splits to train
    on (`apply_dedup=False`: the splits as read, for a caller that refuses dedup)."""
    sets: list[CheckSet] = []
    for task in tasks:
        sets += task_sets(task, splits[task.name], len(tasks) > 1)
    sets += [_items_set(f"retention:{name}", items) for name, items in scored.items()]
    threshold = min(task.data.near_duplicates for task in tasks)
    check = check_sets(sets, CheckOptions(threshold=threshold, overlap_only=True))
    kept = dict(splits)
    for task in tasks:
        prefix = f"{task.name}/" if len(tasks) > 1 else ""
        dropped = check.drop.get(f"{prefix}train", set())
        if task.data.dedup and dropped:
            if apply_dedup:
                train = [r for i, r in enumerate(splits[task.name].train) if i not in dropped]
                kept[task.name] = replace(splits[task.name], train=train)
            note = (f"data.dedup dropped {len(dropped)} of {len(splits[task.name].train)} "
                    f"training examples of {task.name} (duplicates and items also in a scored "
                    "set): they were not trained on")
            check.notes.append(note)
            print(f"tunelab: {note}")
            continue
        leaks = [c for c in check.guarded_leaks if c.earlier.name == f"{prefix}train"]
        if leaks and not task.data.allow_leakage:
            raise TunelabError(leak_message(leaks[0], prefix))
        for leak in leaks:
            check.notes.append(f"data.allow_leakage: trained with {len(leak.same_items)} "
                               f"items of {leak.later.name} in {leak.earlier.name}")
    for leak in check.leaks:
        if not leak.guarded:
            print(f"tunelab: warning: {leak.total} items of {leak.later.name} are also in "
                  f"{leak.earlier.name} ({_counts(leak.found)}); `tunelab data check` shows "
                  "them")
    return check, kept


def leak_message(leak: Crossing, prefix: str) -> str:
    option = "data" if not prefix else f"task {prefix.rstrip('/')}: data"
    shared = leak.total - len(leak.same_items)
    more = f"; {shared} more share a 13-gram with it" if shared else ""
    return (f"{len(leak.same_items)} of the {len(leak.later.items)} {leak.later.name} items are "
            f"also in the training data ({_counts(leak.found, same_only=True)}{more}); they "
            "would inflate the "
            f"measured gain: set {option}.dedup: true to drop them from training, or pass "
            "--allow-leakage (data.allow_leakage: true) to train anyway; `tunelab data check` "
            "lists them")


def _counts(found: dict[str, int], same_only: bool = False) -> str:
    """'exact 2, near 0[, ngram13 1]': a crossing's counts (`same_only`: the copies)."""
    shown = [d.name for d in detectors(1.0) if d.same_example or not same_only]
    return ", ".join(f"{name} {found.get(name, 0)}" for name in shown)


def data_check_summary(check: DataCheck) -> dict[str, object]:
    """summary.json's data-check figures: what leaked where, what repeats, and what data.dedup
    drops (or would drop, when it is off)."""
    return {"leaked": {f"{c.later.name} in {c.earlier.name}": c.total for c in check.leaks},
            "duplicates": dict(check.duplicates),
            "conflicting_inputs": len(check.conflicts),
            "dedup_drops": {name: len(positions) for name, positions in check.drop.items()}}


def check_before_search(config: RunConfig) -> DataCheck:
    """`tunelab tune`'s check, once before any trial (the only time a search reads the test
    split, and only to compare texts): leaked test items stop the tune as they stop `train`;
    data.dedup is refused, since trials never see the test split to drop its copies."""
    tasks = training_tasks(config)
    splits = read_splits(tasks)
    check, _ = guard_run_data(config, tasks, splits, {}, apply_dedup=False)
    prefix = len(tasks) > 1
    changed = [t.name for t in tasks if t.data.dedup
               and check.drop.get(f"{t.name}/train" if prefix else "train")]
    if changed:
        raise TunelabError(
            f"data.dedup ({', '.join(changed)}): a tune's trials never read the test split, so "
            "they cannot drop its copies; write the cleaned data once (tunelab data check "
            "CONFIG --fix clean.jsonl), train on it (data.train_file=clean.jsonl, with the validation and "
            "test files written beside it) and turn data.dedup off")
    return check
