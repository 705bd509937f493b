"""`tunelab predict RUN --input FILE`: a trained run's predictions on new inputs (no answers
needed), written next to every original column.

The run decides what a prediction is: its evaluation task (`run_task`: the run's data section,
so its template, fields, system prompt and instruction, and its eval section, so generation
settings and labels) and that task's output type, whose `predict` makes the prediction the
run's evaluation makes for the same record (generated text; a head's label with the
probability of each label; the likeliest choice). Rows are read by the data sources' readers
(JSONL, CSV, Parquet), kept as they are, in order, and written in the format of --out's
suffix, atomically: a run that stops leaves no half-written file, and --out is never
overwritten.
"""

from __future__ import annotations

import csv
import json
import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunelab.config import DataConfig, MixtureConfig, RunConfig
from tunelab.core.errors import TunelabError
from tunelab.data import get_template_kind
from tunelab.data.sources import (
    PROMPT_FIELDS,
    TARGET_FIELDS,
    close_column,
    column_names,
    input_record,
    read_rows,
    source_scheme,
)
from tunelab.data.training_tasks import run_task, training_tasks
from tunelab.eval.output_types import Framing, Request, get_output_type
from tunelab.methods import get_method
from tunelab.runs import RunDir
from tunelab.runs.run_dir import scoring_run_model

Row = dict[str, Any]  # Any: an input row's cells (JSON, CSV, Parquet values)
"""One input row, every original column kept; the output row adds the prediction."""

READERS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
"""Input suffix -> the data sources' reader."""
ADDED = ("prediction", "probabilities")
"""The columns predict adds (an input already holding one is refused)."""


@dataclass(frozen=True)
class Needed:
    """Columns an input row needs: one of `columns`, which the run reads as `role`."""

    columns: tuple[str, ...]
    role: str


def predict_file(run_dir: str | Path, input_file: str | Path, out_file: str | Path | None = None,
                 limit: int | None = None, task: str | None = None) -> Path:
    """Predict every row (the first `limit`) of `input_file` with the run's model; write the
    rows with `prediction` (and a classifier's `probabilities`) to `out_file` (default:
    `<input stem>.predictions<suffix>` beside the input) and return its path. A multi-task
    run (a mixture, a `tunelab combine` run) predicts as its task `task` (its template,
    fields and eval section).

    Raises:
        TunelabError: a missing or unfinished run, an unreadable input or a missing column,
            an existing --out, or a run whose task has nothing to predict (all before the
            model loads).
    """
    if limit is not None and limit < 1:
        raise TunelabError(f"--limit {limit}: predict at least 1 row, or leave --limit out")
    run = RunDir(Path(run_dir))
    config = _run_config(run, task)
    source = Path(input_file)
    out = Path(out_file) if out_file is not None else default_out(source)
    writer = _writer(out)
    if out.exists():
        raise TunelabError(f"--out {out}: exists; choose another file (nothing is overwritten)")
    rows = _read_inputs(source, config.data, limit)
    predicted = run_task(config)
    output_type = get_output_type(predicted.output_type)
    output_type.check_predict(predicted)
    instruction = (config.data.instruction
                   or source_scheme(config.data.source).instruction(config.data.source))
    records = [input_record(row, origin, config.data.fields, instruction) for origin, row in rows]
    print(f"tunelab: predict: {len(records)} rows of {source} with {run.root} "
          f"({predicted.output_type})")
    lm = scoring_run_model(run.root)
    request = Request(lm, predicted, records, system="predict",
                      framing=Framing.of(predicted))
    predictions = output_type.predict(request)
    written = [{**row, **prediction} for (_, row), prediction in zip(rows, predictions, strict=True)]
    _write_atomically(out, written, writer)
    return out


def default_out(source: Path) -> Path:
    """`<stem>.predictions<suffix>` beside the input (JSONL for a .json input)."""
    suffix = ".jsonl" if source.suffix.lower() == ".json" else source.suffix.lower()
    return source.with_name(f"{source.stem}.predictions{suffix}")


def _run_config(run: RunDir, task: str | None) -> RunConfig:
    """The run's config, once the run is known to be finished: a multi-task run's as if it
    were a single-task run of its task `task`."""
    if not run.root.is_dir():
        raise TunelabError(f"{run.root}: no such run directory; pass a run directory that "
                           "tunelab train wrote")
    config = run.read_config()
    weights = run.weights(get_method(config.method["name"]))
    if not weights.exists():
        raise TunelabError(f"{run.root}: no trained weights in {weights}; did training finish?")
    if not config.is_mixture:
        if task is not None and task != config.name:
            raise TunelabError(f"--task {task}: {run.root} is a single-task run (task "
                               f"{config.name}); leave --task out")
        return config
    tasks = {t.name: t for t in training_tasks(config)}
    if task not in tasks:
        given = f"--task {task}: not a task of {run.root}" if task else \
            f"{run.root}: a multi-task run has one template per task"
        raise TunelabError(f"{given}; pass --task with one of {', '.join(tasks)}")
    chosen = tasks[task]
    return replace(config, name=chosen.name, data=chosen.data, eval=chosen.eval, tasks=[],
                   mixture=MixtureConfig())


def _read_inputs(source: Path, data: DataConfig, limit: int | None) -> list[tuple[str, Row]]:
    """(origin, row) of the input rows (the first `limit`), holding the columns the run reads."""
    if not source.is_file():
        raise TunelabError(f"--input {source}: no such file")
    reader = READERS.get(source.suffix.lower())
    if reader is None:
        raise TunelabError(f"--input {source}: cannot tell the format from "
                           f"'{source.suffix}'; give a .jsonl, .csv or .parquet file")
    rows = read_rows(str(source), reader)[:limit]
    columns = column_names(rows)
    for need in needed_columns(data):
        if not any(column in columns for column in need.columns):
            raise TunelabError(f"--input {source}: {_missing(need, columns)}")
    taken = [column for column in ADDED if column in columns]
    if taken:
        raise TunelabError(f"--input {source}: already has a column '{taken[0]}', which predict "
                           "adds; rename it")
    return rows


def _missing(need: Needed, columns: list[str]) -> str:
    """'no column ... (columns: ...); fix' for a requirement no column meets."""
    wanted = need.columns[0]
    names = " or ".join(f"'{c}'" for c in need.columns)
    close = close_column(wanted, columns) if len(need.columns) == 1 else None
    fix = (f"did you mean '{close}'? rename it to '{wanted}'" if close else
           f"rename the column that holds it to '{wanted}'")
    return (f"no column {names} (columns: {', '.join(columns)}); {fix} (the run reads it as "
            f"{need.role})")


def needed_columns(data: DataConfig) -> list[Needed]:
    """What every input row needs, as the run's data section reads it: each column a field is
    mapped to (not the answer's), each column data.prompt_format names, and, for the other
    templates, a column holding the prompt."""
    fields = data.fields
    needs = [Needed((column,), f"data.fields.{name}") for name, column in fields.items()
             if name not in TARGET_FIELDS]
    if get_template_kind(data.template).needs_prompt_format:
        mapped = {"instruction": (fields.get("instruction", "instruction"),  # or data.instruction
                                  fields.get("prompt", "prompt")),
                  "input": (fields.get("input", "input"),)}
        for name in _format_fields(data.prompt_format or ""):
            if name in TARGET_FIELDS or (name == "instruction" and data.instruction is not None):
                continue
            needs.append(Needed(mapped.get(name, (name,)), f"{{{name}}} in data.prompt_format"))
    elif not any(name in fields for name in (*PROMPT_FIELDS, "messages")):
        prompt = tuple(fields.get(name, name) for name in ("input", "instruction", "prompt",
                                                           "messages"))
        needs.append(Needed(prompt, "the prompt"))
    return list(dict.fromkeys(needs))


def _format_fields(text: str) -> list[str]:
    """The field names a format string fills ('{input}', '{row[0]}' -> input, row)."""
    names = [field for _, field, _, _ in string.Formatter().parse(text) if field]
    return [name.split(".")[0].split("[")[0] for name in names]


# --- writing -------------------------------------------------------------------------------

Writer = Callable[[Sequence[Row], Path], None]


def _writer(out: Path) -> Writer:
    """The writer of --out's format (its suffix), refused before any work when unknown."""
    writers: dict[str, Writer] = {".jsonl": _write_jsonl, ".csv": _write_csv,
                                  ".parquet": _write_parquet}
    if out.suffix.lower() not in writers:
        raise TunelabError(f"--out {out}: cannot tell the format from '{out.suffix}'; name a "
                           ".jsonl, .csv or .parquet file")
    return writers[out.suffix.lower()]


def _write_atomically(out: Path, rows: Sequence[Row], write: Writer) -> None:
    """Write a temporary file beside `out`, then move it into place: `out` holds all the rows
    or does not exist."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        try:
            write(rows, staging)
        except TunelabError as err:
            raise TunelabError(f"--out {out}: {err}") from None
        if out.exists():  # made while the model predicted
            raise TunelabError(f"--out {out}: exists; choose another file (nothing is "
                               "overwritten)")
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)


def _write_jsonl(rows: Sequence[Row], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _write_csv(rows: Sequence[Row], path: Path) -> None:
    """One column per key (in order of appearance); lists and mappings as JSON text."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})


def _cell(value: object) -> object:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _write_parquet(rows: Sequence[Row], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(list(rows))
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise TunelabError(f"the rows do not fit one Parquet table ({err}); write .jsonl "
                           "instead") from None
    pq.write_table(table, path)
