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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunelab.config import RunConfig, TrainTaskConfig, load_run_config
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
)
from tunelab.data.checks.items import instruction_is_shared
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


@dataclass
class CheckTarget:
    """What one `tunelab data check` looks at, before the detectors run."""

    sets: list[CheckSet]
    labels: list[str] | None
    notes: list[str] = field(default_factory=list)
    config: RunConfig | None = None
    source: Path | None = None
    """A lone data file (`--fix` writes it without its duplicates)."""


def data_check(target: str | Path, overrides: Sequence[str] = (), against: Sequence[str] = (),
               fix: str | Path | None = None, out: str | Path | None = "data_check.json",
               threshold: float | None = None, label_errors: bool = True,
               fields: dict[str, str] | None = None) -> DataCheck:
    """Check a run config's data (or a data file, or a task's splits); write `out` (JSON) and,
    with `fix`, a copy without duplicates and leaked items (the input is never touched)."""
    found = check_target(target, list(overrides), fields or {})
    for name in against:
        found.sets += against_sets(name, found.notes)
    options = CheckOptions(
        threshold=threshold if threshold is not None else (
            found.config.data.near_duplicates if found.config else 0.8),
        labels=found.labels, label_errors=label_errors, tokenize=_tokenizer(found.config))
    if not 0 <= options.threshold <= 1:
        raise TunelabError(f"--threshold {options.threshold}: a Jaccard similarity in [0, 1]")
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
        raw_is_task = path.is_file() and "output_type" in path.read_text(encoding="utf-8")
        if not raw_is_task:
            if fields:
                raise TunelabError("--fields: a run config maps columns in data.fields")
            return config_target(load_run_config(path, overrides))
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
        sets += split_sets(task, load_splits(task.data), len(tasks) > 1)
    notes: list[str] = []
    for kept in retention.retention_tasks(config.retention, config.model.kind):
        sets.append(_items_set(f"retention:{kept.name}", read_task(kept, 0)))
    if config.bias.bbq:
        sets += bbq_sets(config.bias.bbq_categories, notes)
    labels = label_set(sets, config.eval.labels if not config.is_mixture else None) \
        if not config.is_mixture else None
    return CheckTarget(sets, labels, notes, config)


def split_sets(task: TrainTaskConfig, splits: Splits, named: bool) -> list[CheckSet]:
    """A task's splits as sets; a multi-task run names each `task/split`."""
    records = [r for part in splits.as_dict().values() for r in part]
    shared = instruction_is_shared(records)
    return [CheckSet.of(f"{task.name}/{name}" if named else name, SPLIT_ROLES[name], part, shared)
            for name, part in splits.as_dict().items() if part]


def task_target(name: str) -> CheckTarget:
    """A task's own splits (a benchmark's census): each split checked as the run would see it."""
    task = load_task(name)
    items = read_task(task, 0)
    sets = [CheckSet.of(f"{task.name}/{split}", SPLIT_ROLES.get(split, EVALUATED), records)
            for split, records in items.data.splits.items() if records]
    return CheckTarget(sets, label_set(sets, task.eval.labels))


def against_sets(name: str, notes: list[str]) -> list[CheckSet]:
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


def _tokenizer(config: RunConfig | None):  # noqa: ANN202
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


def write_fixed(check: DataCheck, found: CheckTarget, out: Path) -> list[Path]:
    """The trained set(s) without the dropped items at `out`; a config's validation and test
    splits beside it unchanged (train with data.train_file/validation_file/test_file)."""
    written: list[Path] = []
    for checked in found.sets:
        if not checked.role.own:
            continue
        dropped = check.drop.get(checked.name, set()) if checked.role.trained else set()
        path = out if checked.role.trained else out.with_name(
            f"{out.stem}.{checked.name.replace('/', '.')}{out.suffix}")
        if path in written:
            raise TunelabError(f"--fix {out}: a multi-task run has several training splits; "
                               "fix one task's data file at a time")
        rows = [item.record.columns if item.record is not None else {} for item in checked.items
                if item.index not in dropped]
        path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
        written.append(path)
    return written


def guard_run_data(config: RunConfig, tasks: Sequence[TrainTaskConfig],
                   splits: dict[str, Splits], scored: dict[str, TaskItems]
                   ) -> tuple[DataCheck, dict[str, Splits]]:
    """`tunelab train`'s check before a model loads: duplicates and leakage of every task's
    splits and the retention tasks (`scored`). A task with data.dedup loses the dropped
    training examples; test items in the training data stop the run unless
    data.allow_leakage. Returns the check and the splits to train on."""
    sets: list[CheckSet] = []
    for task in tasks:
        sets += split_sets(task, splits[task.name], len(tasks) > 1)
    sets += [_items_set(f"retention:{name}", items) for name, items in scored.items()]
    threshold = min(task.data.near_duplicates for task in tasks)
    check = check_sets(sets, CheckOptions(threshold=threshold, overlap_only=True))
    kept = dict(splits)
    for task in tasks:
        prefix = f"{task.name}/" if len(tasks) > 1 else ""
        dropped = check.drop.get(f"{prefix}train", set())
        if task.data.dedup and dropped:
            train = [r for i, r in enumerate(splits[task.name].train) if i not in dropped]
            kept[task.name] = replace(splits[task.name], train=train)
            print(f"tunelab: data.dedup: dropped {len(dropped)} of "
                  f"{len(splits[task.name].train)} training examples of {task.name} "
                  "(duplicates and items also in a scored set)")
            continue
        leaks = [c for c in check.guarded_leaks if c.earlier.name == f"{prefix}train"]
        if leaks and not task.data.allow_leakage:
            raise TunelabError(leak_message(leaks[0], prefix))
    for leak in check.leaks:
        if not leak.guarded:
            print(f"tunelab: warning: {leak.scored_items()} items of {leak.later.name} are "
                  f"also in {leak.earlier.name} ({_counts(leak.found)}); `tunelab data check` "
                  "shows them")
    return check, kept


def leak_message(leak: Crossing, prefix: str) -> str:
    option = "data" if not prefix else f"task {prefix.rstrip('/')}: data"
    return (f"{leak.scored_items()} of the {len(leak.later.items)} {leak.later.name} items are "
            f"also in the training data ({_counts(leak.found)}); they would inflate the "
            f"measured gain: set {option}.dedup: true to drop them from training, or pass "
            "--allow-leakage (data.allow_leakage: true) to train anyway; `tunelab data check` "
            "lists them")


def _counts(found: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in found.items())


def data_check_summary(check: DataCheck) -> dict[str, object]:
    """summary.json's data-check figures: what leaked where, what repeats, and what data.dedup
    drops (or would drop, when it is off)."""
    return {"leaked": {f"{c.later.name} in {c.earlier.name}": c.scored_items()
                       for c in check.leaks},
            "duplicates": {name: sum(found.values()) for name, found in check.within.items()},
            "conflicting_inputs": len(check.conflicts),
            "dedup_drops": {name: len(positions) for name, positions in check.drop.items()}}


def check_before_search(config: RunConfig) -> DataCheck:
    """`tunelab tune`'s check, once before any trial (the only time a search reads the test
    split, and only to compare texts): leaked test items stop the tune as they stop `train`;
    data.dedup is refused, since trials never see the test split to drop its copies."""
    tasks = training_tasks(config)
    splits = read_splits(tasks)
    check, kept = guard_run_data(config, tasks, splits, {})
    changed = [t.name for t in tasks if kept[t.name] is not splits[t.name]]
    if changed:
        raise TunelabError(
            f"data.dedup ({', '.join(changed)}): a tune's trials never read the test split, so "
            "they cannot drop its copies; write the cleaned data once (tunelab data check "
            "CONFIG --fix clean.jsonl), train on it (data.train_file=clean.jsonl, with the validation and "
            "test files written beside it) and turn data.dedup off")
    return check
