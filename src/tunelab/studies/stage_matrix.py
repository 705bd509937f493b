"""The stage x task matrix of a `model.init_from` run: what each stage of a lineage gained on
its own task and what it cost the earlier ones.

Rows are the stages (the earlier runs, oldest first, then this run), columns every stage's
evaluated tasks; a cell is that stage's model scored on that task's test split (the items the
stage that trained the task scored), and every cell from the second row on is paired per item
against the cell above it, the previous stage (`eval/compare.py: paired_difference`: the
change, its paired-bootstrap 95% CI and p). Each cell is read from where it was scored, and
nothing is scored twice:

- a stage on its own tasks: its eval/fine-tuned/ (a mixture's tasks below it);
- a stage on an earlier stage's task: its stages/fine-tuned/<task>/, scored after it trained;
- a stage on the next stage's task: the next run's stages/fine-tuned-<STAGE>/<task>/, since a
  run scores its starting point, which computes what the previous stage ended with, before it
  trains (and, from that same model, any previous-stage cell no run wrote).

Cells two or more stages ahead of a row pair with nothing and stay empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data.training_tasks import evaluation_task, training_tasks
from tunelab.eval.compare import PairedDifference, paired_difference, primary_key
from tunelab.eval.runner import EvalResult, evaluate_loaded, read_result, write_result
from tunelab.eval.tables import format_table
from tunelab.eval.tasks import TaskItems, check_task, read_task
from tunelab.models import LoadedModel
from tunelab.runs import EvalDir, RunDir, System
from tunelab.runs.start import Start, lineage


@dataclass(frozen=True)
class StageRun:
    """One row: a run of the lineage (the last is this run)."""

    run: RunDir
    config: RunConfig
    start: str
    """How it started: base, continue or merge."""

    @property
    def name(self) -> str:
        return self.run.root.name

    def own_eval(self, task: str) -> EvalDir:
        """Where the run scored one of its own tasks on test (`workflows/train.py`)."""
        tuned = self.run.eval_dir(System.tuned())
        return tuned.task(task) if self.config.is_mixture else tuned


@dataclass(frozen=True)
class Column:
    """One task of one stage, as that stage's run scored it."""

    name: str
    """The task's name; with ' (stage K)' where an earlier stage has a task of that name."""
    stage: int
    """The row of the stage that trained it."""
    task: TaskConfig
    limit: int | None
    items: TaskItems


@dataclass
class RunStages:
    """A model.init_from run's stages and their tasks, resolved and read before training."""

    rows: list[StageRun]
    columns: list[Column]

    @classmethod
    def of(cls, config: RunConfig, start: Start, run: RunDir,
           evaluated: dict[str, TaskConfig]) -> RunStages | None:
        """The lineage's stages and every stage's evaluated tasks (their data read and checked
        here, before any model loads); None for a run from the base model."""
        if start.earlier is None:
            return None
        rows = [StageRun(RunDir(stage.run), before, stage.start)
                for stage, _, before in lineage(start)]
        rows.append(StageRun(run, config, start.name))
        columns: list[Column] = []
        for index, row in enumerate(rows):
            tasks = evaluated if row.run is run else {
                t.name: evaluation_task(t, row.config, "test")
                for t in training_tasks(row.config) if t.eval.metrics}
            for name, task in tasks.items():
                check_task(task)
                taken = any(c.name == name for c in columns)
                columns.append(Column(f"{name} (stage {index + 1})" if taken else name, index,
                                      task, row.config.eval.limit or task.eval.limit,
                                      read_task(task, 0)))
        return cls(rows, columns)

    @property
    def previous(self) -> StageRun:
        return self.rows[-2]

    def stored(self, row: int, column: Column) -> EvalDir | None:
        """Where a run of the lineage wrote row's model's score on column (None: nowhere)."""
        stage = self.rows[row]
        places = [stage.own_eval(column.task.name)] if column.stage == row else \
            [stage.run.stages.evaluation(System.tuned(), column.name)] if column.stage < row else []
        places += [later.run.stages.evaluation(System.tuned(stage.name), column.name)
                   for later in self.rows[row + 1:]]
        return next((place for place in places if place.exists()), None)

    def before(self, lm: LoadedModel) -> dict[str, EvalResult]:
        """The model this run starts from (it computes what the previous stage ended with),
        scored on this run's tasks and on any task whose previous-stage cell is missing."""
        last = len(self.rows) - 1
        system = System.tuned(self.previous.name)
        wanted = [c for c in self.columns
                  if c.stage == last or self.stored(last - 1, c) is None]
        return {c.name: evaluate_loaded(lm, c.task, system, shots=0, limit=c.limit,
                                        items=c.items) for c in wanted}

    def finish(self, lm: LoadedModel, before: dict[str, EvalResult],
               own: dict[str, EvalResult]) -> StageMatrix:
        """The trained model scored on every earlier stage's task; the matrix written to
        RUN/stages/ (with the evaluations it scored) and returned."""
        last = len(self.rows) - 1
        files = self.rows[-1].run.stages
        for column in self.columns:
            if column.name in before:
                write_result(before[column.name], files.evaluation(
                    System.tuned(self.previous.name), column.name), column.task)
        after: dict[str, EvalResult | None] = {}
        for column in self.columns:
            if column.stage == last:
                after[column.name] = own.get(column.task.name)
                continue
            result = evaluate_loaded(lm, column.task, System.tuned(), shots=0,
                                     limit=column.limit, items=column.items)
            write_result(result, files.evaluation(System.tuned(), column.name), column.task)
            after[column.name] = result
        cells = [{c.name: self._read(row, c) for c in self.columns} for row in range(last)]
        cells.append(after)
        matrix = StageMatrix.of(self, cells)
        files.write(matrix.data, f"{matrix.table(markdown=True)}\n\n{STAGE_NOTE}\n")
        return matrix

    def _read(self, row: int, column: Column) -> EvalResult | None:
        place = self.stored(row, column)
        return read_result(place) if place is not None else None


@dataclass
class StageMatrix:
    """The matrix as summary.json and stages.json hold it (`data`)."""

    data: dict[str, Any]  # Any: JSON values

    @classmethod
    def of(cls, stages: RunStages, cells: list[dict[str, EvalResult | None]]) -> StageMatrix:
        keys: dict[str, str] = {}
        lower: dict[str, bool] = {}
        for column in stages.columns:
            first = next((row[column.name] for row in cells if row[column.name] is not None),
                         None)
            if first is not None:
                keys[column.name] = primary_key(column.task, first)
        rows = []
        for index, (stage, row) in enumerate(zip(stages.rows, cells, strict=True)):
            scores: dict[str, float | None] = {}
            changes: dict[str, dict[str, object] | None] = {}
            for column in stages.columns:
                result, key = row[column.name], keys.get(column.name)
                scores[column.name] = result.scores.get(key) if result and key else None
                above = cells[index - 1][column.name] if index else None
                change = _change(column, above, result, key)
                if change is not None:
                    lower[column.name] = change.lower_is_better
                changes[column.name] = None if change is None else {
                    "delta": change.delta, "ci": list(change.ci), "p_value": change.p_value}
            rows.append({"stage": index + 1, "run": str(stage.run.root.resolve()),
                         "method": stage.config.method["name"], "start": stage.start,
                         "tasks": [c.name for c in stages.columns if c.stage == index],
                         "scores": scores, "changes": changes})
        return cls({"tasks": [c.name for c in stages.columns], "keys": keys,
                    "lower_is_better": lower, "rows": rows})

    def table(self, markdown: bool = False) -> str:
        return format_table(*stage_table(self.data), markdown)


def _change(column: Column, before: EvalResult | None, after: EvalResult | None,
            key: str | None) -> PairedDifference | None:
    """after - before on the same items, or None where either is missing or they scored
    other items (the same task's data changed between the runs)."""
    if before is None or after is None or key is None or not same_items(before, after):
        return None
    try:
        return paired_difference(column.task, before, after, key)
    except TunelabError:
        return None  # a score the earlier evaluation did not record


def same_items(a: EvalResult, b: EvalResult) -> bool:
    """Whether two evaluations scored the same items, in the same order."""
    def identity(result: EvalResult) -> list[tuple[object, object]]:
        return [(row.get("index"), row.get("origin")) for row in result.predictions]

    return a.n == b.n and identity(a) == identity(b)


def stage_table(data: dict[str, Any]  # Any: stages.json's JSON values
                ) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the matrix: each cell a stage's score on a task, from the second
    stage on with its change against the stage above and the change's 95% CI."""
    tasks, keys = data["tasks"], data["keys"]
    headers = ["stage", "run (method, start)",
               *[f"{t} ({keys[t]})" if t in keys else t for t in tasks]]
    rows = []
    for row in data["rows"]:
        cells = []
        for task in tasks:
            score, change = row["scores"].get(task), row["changes"].get(task)
            text = "-" if score is None else f"{score:.2f}"
            if change is not None:
                low, high = change["ci"]
                text += f" ({change['delta']:+.2f} [{low:+.2f}, {high:+.2f}])"
            cells.append(text + (" *" if task in row["tasks"] else ""))
        rows.append([str(row["stage"]), f"{Path(row['run']).name} ({row['method']}, "
                                        f"{row['start']})", *cells])
    return headers, rows


STAGE_NOTE = ("Each cell: that stage's model on the task's test items; from stage 2 on, the "
              "change against the stage above, paired per item (95% paired-bootstrap CI). "
              "* marks the tasks a stage trained on; - a score no run made (two stages ahead).")
