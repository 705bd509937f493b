"""Data sources: what a `data.source` names and how it is read.

A source is a file (JSONL, CSV, Parquet, a `datasets` folder saved to disk, a BIG-bench
task.json as training rows, raw text: a .txt file or a folder of them; `data.format`) or
`SCHEME:ARGUMENT`. Each scheme is a
`SourceScheme` in one registry (`source_scheme(source)`): `builtin:NAME` here, and the
benchmark layouts (bigbench:, bigbench-file:, squad:, mmlu:, glue:, superglue:) that
`tunelab.eval.datasets` registers when it is imported. A scheme reads training rows (`rows`),
an evaluation task's splits (`read`), says whether its reader writes the prompts itself and how
it appends an answer (`reads_prompts`, `completion_format`), and whether its data is here or
how to fetch it (`missing`, `fetched_task`). No module outside the registry compares a scheme.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data.bigbench_training import bigbench_rows
from tunelab.data.builtin_datasets import BUILTIN_INSTRUCTIONS, load_builtin
from tunelab.data.records import Record
from tunelab.data.splits import Splits, TaskData, seeded_split
from tunelab.data.templates import get_template_kind

Rows = Iterator[tuple[str, dict[str, Any]]]  # Any: a source row's values (JSON, CSV, Parquet cells)
"""(origin, row) of every example of a source: its columns by name."""

ROLES = ("system", "user", "assistant")
"""The chat roles a conversation's messages may have."""

CANONICAL = ("instruction", "input", "output", "prompt", "completion", "messages", "text")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
                   ".txt": "text"}


class SourceScheme:
    """One kind of data.source: how it is read for training and for evaluation, and what an
    evaluation task over it defaults to. The base reads like a file source; subclasses
    override what differs."""

    name: ClassVar[str]
    """The part of data.source before the colon ('' for a file)."""
    reads_prompts: ClassVar[bool] = False
    """Whether its reader writes each example's prompt (a `prompt` column, as the benchmark
    prompts it): a task file naming no template gets template format over '{prompt}'."""

    def argument(self, source: str) -> str:
        """data.source without the scheme: the NAME of builtin:NAME, the folder of glue:DIR."""
        return source[len(self.name) + 1:]

    def rows(self, source: str, fmt: str) -> Rows:
        """The source's examples as training rows (`read_records`)."""
        raise TunelabError(f"data.source '{source}': {self.name}: data is for evaluation tasks "
                           "(tunelab eval); train on a file or builtin:NAME")

    def read(self, config: DataConfig) -> TaskData:
        """An evaluation task's splits: the records split by data.test_size and
        validation_size (or read from data.train_file / validation_file / test_file)."""
        return TaskData(load_splits(config).as_dict())

    def completion_format(self, source: str) -> str:
        """How an answer follows the reader's prompt (for `reads_prompts` schemes)."""
        return " {output}"

    def missing(self, source: str) -> str | None:
        """The command that fetches the source's data when it is not here yet; None when it
        is here (or is not fetched by tunelab)."""
        return None

    def fetched_task(self, source: str) -> str | None:
        """The BIG-bench task `tunelab data fetch bigbench` downloads for this source, if any."""
        return None

    def instruction(self, source: str) -> str | None:
        """The instruction the source's own rows carry, for new inputs that have none
        (`tunelab predict` on a run trained on it); None: rows carry their own."""
        return None


class FileSource(SourceScheme):
    """A file or folder path; data.format (or its suffix) picks the reader."""

    name = ""

    def argument(self, source: str) -> str:
        return source

    def rows(self, source: str, fmt: str) -> Rows:
        return _read_rows(Path(source).expanduser(), fmt)


class BuiltinSource(SourceScheme):
    """builtin:NAME, a dataset that installs offline with PyPI packages (builtin_datasets.py)."""

    name = "builtin"

    def rows(self, source: str, fmt: str) -> Rows:
        return iter(load_builtin(self.argument(source)))

    def instruction(self, source: str) -> str | None:
        return BUILTIN_INSTRUCTIONS.get(self.argument(source))


FILE = FileSource()
SCHEMES: dict[str, SourceScheme] = {}
"""data.source scheme (before the colon) -> how it is read; files have no scheme."""


def register_scheme(scheme: SourceScheme) -> SourceScheme:
    """Add a scheme to the registry (eval/datasets registers the benchmark layouts)."""
    SCHEMES[scheme.name] = scheme
    return scheme


register_scheme(BuiltinSource())


def source_scheme(source: str) -> SourceScheme:
    """The scheme that reads data.source `source` (the file reader when it names none)."""
    name, sep, _ = source.partition(":")
    return SCHEMES[name] if sep and name in SCHEMES else FILE


def read_source(config: DataConfig) -> TaskData:
    """An evaluation task's data: its source's splits, from whichever reader it needs."""
    return source_scheme(config.source).read(config)


def load_splits(config: DataConfig, with_test: bool = True) -> Splits:
    """Read the data and split it (seeded shuffle), or read the given split files.
    `with_test=False` (a hyperparameter search): the test split is sealed (`SealedSplit`) and
    data.test_file is not even opened."""
    fields = get_template_kind(config.template).record_fields(config.fields)

    def read(source: str) -> list[Record]:
        return read_records(source, config.format, fields, config.instruction)

    if config.train_file:
        train = read(config.train_file)
        validation = read(config.validation_file) if config.validation_file else []
        test = read(config.test_file) if config.test_file and with_test else []
        splits = Splits(train, validation, test)
    else:
        splits = seeded_split(read(config.source), config, config.source)
    return splits if with_test else splits.sealed(
        f"{'data.test_file' if config.test_file else 'data.test_size'}: the test split is "
        "sealed while hyperparameters are searched (trials are scored on the validation "
        "split); it is scored once, after the search (tunelab tune)")


def read_records(
    source: str,
    fmt: str = "auto",
    fields: dict[str, str] | None = None,
    instruction: str | None = None,
) -> list[Record]:
    """Read a data source into records, mapping column names through ``fields``."""
    fields = dict(fields or {})
    unknown = set(fields) - set(CANONICAL)
    if unknown:
        raise TunelabError(
            f"data.fields: unknown field {sorted(unknown)[0]!r}; map any of {', '.join(CANONICAL)}"
        )
    rows = read_rows(source, fmt)
    _check_mapped_columns(rows, source, fields)
    _check_filled_columns(rows, source, fields)
    return [_to_record(row, origin, fields, instruction) for origin, row in rows]


def read_rows(source: str, fmt: str = "auto") -> list[tuple[str, dict[str, Any]]]:  # Any: cells
    """(origin, row) of every example of a source, as its reader reads it: no columns mapped
    yet (`read_records` maps them; `tunelab predict` keeps the rows as they are)."""
    rows = list(source_scheme(source).rows(source, fmt))
    if not rows:
        raise TunelabError(f"{source}: no examples found; the file is empty")
    return rows


def input_record(row: dict[str, Any], origin: str,  # Any: a source row's values
                 fields: dict[str, str], instruction: str | None) -> Record:
    """A new input as `read_records` maps a row, with no answer needed: output '' without an
    output column; a conversation that ends with the user's turn gets an empty answer turn."""
    return _to_record(row, origin, fields, instruction, answered=False)


def column_names(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:  # Any: source cells
    """Every column of the rows, in order of appearance (JSONL rows may differ)."""
    return list(dict.fromkeys(str(name) for _, row in rows for name in row if name is not None))


def close_column(column: str, columns: list[str]) -> str | None:
    """The column name most like `column` (a typo's fix), if any is close."""
    close = difflib.get_close_matches(str(column), columns, n=1)
    return close[0] if close else None


PROMPT_FIELDS = ("instruction", "prompt", "input")
"""The fields a record's prompt (user turn) is read from."""
TARGET_FIELDS = ("output", "completion")
"""The fields a record's answer is read from."""


def _check_mapped_columns(rows: list[tuple[str, dict[str, Any]]],  # Any: source cells
                          source: str,
                          fields: dict[str, str]) -> None:
    """Refuse a data.fields entry naming a column that no row has (a typo would otherwise
    train on a blank prompt). A column in at least one row is enough: JSONL rows may differ."""
    columns = column_names(rows)
    for field_name, column in fields.items():
        if column in columns:
            continue
        close = close_column(column, columns)
        fix = f"did you mean '{close}'?" if close else f"map data.fields.{field_name} to one of them"
        raise TunelabError(f"data.fields.{field_name}: column '{column}' is in no row of {source} "
                           f"(columns: {', '.join(columns)}); {fix}")


def _check_filled_columns(rows: list[tuple[str, dict[str, Any]]],  # Any: source cells
                          source: str,
                          fields: dict[str, str]) -> None:
    """Refuse a column the records read that is empty in every row: one mapped in data.fields,
    or the prompt or answer columns when all of them are blank (every example would train on
    an empty prompt or answer). Some empty cells are fine here (`data check` counts them)."""
    plain = [row for _, row in rows if row.get(fields.get("messages", "messages")) is None]
    if not plain:
        return

    def blank(column: str) -> bool:
        return all(_is_blank(row.get(column)) for row in plain)

    # data.template text reads only its document column
    groups = [("text",)] if "text" in fields else [PROMPT_FIELDS, TARGET_FIELDS]
    for group in groups:
        present = [(name, fields.get(name, name)) for name in group
                   if any(fields.get(name, name) in row for row in plain)]
        empty = [(name, column) for name, column in present if blank(column)]
        mapped = [(name, column) for name, column in empty if name in fields]
        if mapped or (present and len(empty) == len(present)):
            name, column = (mapped or empty)[0]
            option = f" (data.fields.{name})" if name in fields else ""
            raise TunelabError(
                f"{source}: column '{column}'{option} is empty in every row; fill it in, "
                f"or map data.fields.{name} to the column that holds the {name}")


def _is_blank(value: object) -> bool:
    """An empty cell: missing, null, or only whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())


def _read_rows(path: Path, fmt: str) -> Rows:
    if not path.exists():
        raise TunelabError(f"{path}: no such file or directory; check data.source")
    if fmt == "auto":
        if path.is_dir():
            fmt = "text" if _is_text_folder(path) else "hf_disk"
        else:
            fmt = _SUFFIX_FORMATS.get(path.suffix.lower(), "")
            if not fmt:
                raise TunelabError(
                    f"{path}: cannot tell the format from '{path.suffix}'; "
                    "set data.format to jsonl, csv, parquet, hf_disk or text"
                )
    if fmt not in FILE_FORMATS:
        raise TunelabError(f"data.format '{fmt}': use auto, {', '.join(FILE_FORMATS)}")
    return FILE_FORMATS[fmt](path)


def read_text(path: Path) -> str:
    """A data file as UTF-8 text; bytes that are not UTF-8 are a one-line error naming the
    line (a binary file under a text name, or another encoding)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        what = "binary data" if b"\x00" in data[:4096] else f"byte 0x{data[err.start]:02x}"
        raise TunelabError(f"{path}:{line}: {what} is not UTF-8 text; save the file as UTF-8 "
                           "(e.g. iconv -f latin1 -t utf-8)") from None


def _is_text_folder(path: Path) -> bool:
    """A folder of .txt files (raw text), not a `datasets` directory saved to disk."""
    saved = (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
    return not saved and any(p.is_file() for p in path.rglob("*.txt"))


def _text_rows(path: Path) -> Rows:
    """Raw text as `text` rows. A folder: one document per .txt file in it (subfolders
    included, in path order), the whole file. A file: one document per block of lines
    between blank lines (a file without blank lines is one document). An empty file is an
    error naming it: a corpus with a missing file is better stopped than trained."""
    if not path.is_dir():
        yield from _text_blocks(path)
        return
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise TunelabError(f"{path}: no .txt files in this folder; data.format text reads a "
                           ".txt file or a folder of them")
    for file in files:
        text = read_text(file).strip()
        if not text:
            raise TunelabError(f"{file}: an empty text file; fill it in or remove it")
        yield str(file), {"text": text}


_BLANK_LINES = re.compile(r"(?:\r?\n[ \t]*){2,}")


def _text_blocks(path: Path) -> Rows:
    """A .txt file's documents: blocks between blank lines, each named by its first line."""
    text = read_text(path)
    if not text.strip():
        raise TunelabError(f"{path}: an empty text file; fill it in or remove it")
    start = 0
    for blank in [*_BLANK_LINES.finditer(text), None]:
        end = blank.start() if blank else len(text)
        block = text[start:end]
        if block.strip():
            lead = len(block) - len(block.lstrip())
            line = text.count("\n", 0, start + lead) + 1
            yield f"{path}:{line}", {"text": block.strip()}
        if blank:
            start = blank.end()


def _jsonl_rows(path: Path) -> Rows:
    text = read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise TunelabError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
        for i, row in enumerate(data):
            yield f"{path}[{i}]", _expect_object(row, f"{path}[{i}]")
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise TunelabError(
                f"{path}:{lineno}: malformed JSON ({err.msg} at column {err.colno}); "
                "each line must be one JSON object"
            ) from None
        yield f"{path}:{lineno}", _expect_object(row, f"{path}:{lineno}")


def _expect_object(row: object, origin: str) -> dict[str, Any]:  # Any: JSON values
    if not isinstance(row, dict):
        raise TunelabError(f"{origin}: expected a JSON object, got {type(row).__name__}")
    return row


def _csv_rows(path: Path) -> Rows:
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        any_row = False
        for row in reader:
            any_row = True
            # line_num is the physical line where this row ended (header is line 1).
            yield f"{path}:{reader.line_num}", dict(row)
        header = [name for name in reader.fieldnames or [] if name.strip()]
        if not any_row and header:
            raise TunelabError(f"{path}: no rows (only a header: {', '.join(header)}); "
                               "add examples below the header")


def _parquet_rows(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise TunelabError(f"{path}: not a readable Parquet file ({err})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}[row {i}]", row


def _hf_rows(path: Path) -> Rows:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise TunelabError(f"{path}: not a `datasets` directory saved with save_to_disk ({err})") from None
    if isinstance(data, DatasetDict):
        if "train" not in data:
            raise TunelabError(
                f"{path}: a DatasetDict without a 'train' split; "
                "point data.train_file/test_file at one split each"
            )
        data = data["train"]
    assert isinstance(data, Dataset)
    for i, row in enumerate(data):
        yield f"{path}[row {i}]", dict(row)


def _to_record(
    row: dict[str, Any], origin: str,  # Any: a source row's values (JSON, CSV, Parquet)
    fields: dict[str, str], instruction: str | None, answered: bool = True
) -> Record:
    """A row as a record; `answered=False` (a new input): no answer needed."""
    def column(name: str) -> object:
        return row.get(fields.get(name, name))

    if "text" in fields:  # data.template text: the document is the column mapped to text
        document = column("text")
        if document is None:
            raise TunelabError(f"{origin}: missing field '{fields['text']}' (columns: "
                               f"{', '.join(map(str, row))}); data.template text reads each "
                               "document from it: map another with data.fields, e.g. "
                               "fields: {text: body}")
        return Record(output=str(document), columns=row, origin=origin)
    messages = column("messages")
    if messages is not None:
        if not answered and isinstance(messages, list) and messages and (
                not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant"):
            messages = [*messages, {"role": "assistant", "content": ""}]
        return Record(messages=_check_messages(messages, origin), columns=row, origin=origin)
    prompt = column("instruction") if column("instruction") is not None else column("prompt")
    output = column("output") if column("output") is not None else column("completion")
    if output is None and not answered:
        output = ""
    if output is None:
        wanted = fields.get("output", "output")
        raw = "; raw text: data.template text" if "text" in row else ""
        raise TunelabError(
            f"{origin}: missing field '{wanted}' (columns: {', '.join(map(str, row))}); "
            f"map the target column with data.fields, e.g. fields: {{output: label}}{raw}"
        )
    inp = column("input")
    return Record(
        instruction=str(prompt) if prompt is not None else (instruction or ""),
        input="" if inp is None else str(inp),
        output=str(output),
        columns=row,
        origin=origin,
    )


FILE_FORMATS: dict[str, Callable[[Path], Rows]] = {
    "jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows, "hf_disk": _hf_rows,
    "bigbench": bigbench_rows, "text": _text_rows}
"""data.format -> the reader of a file (or folder) in it; `auto` picks by the suffix."""


def _check_messages(messages: object, origin: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise TunelabError(f"{origin}: 'messages' must be a non-empty list of {{role, content}}")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TunelabError(f"{origin}: each message needs 'role' and 'content'")
        if message["role"] not in ROLES:
            raise TunelabError(f"{origin}: message role {message['role']!r}: use one of "
                               f"{', '.join(ROLES)}")
    if messages[-1]["role"] != "assistant":
        raise TunelabError(f"{origin}: the last message must be the assistant's (the completion)")
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
