"""Read records from JSONL, CSV, Parquet, `datasets` saved to disk, or a built-in dataset."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.core.errors import TunelabError
from tunelab.data.bigbench_training import bigbench_rows
from tunelab.data.builtin_datasets import load_builtin
from tunelab.data.records import Record

ROLES = ("system", "user", "assistant")
"""The chat roles a conversation's messages may have."""

CANONICAL = ("instruction", "input", "output", "prompt", "completion", "messages")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


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
    if source.startswith("builtin:"):
        rows: Iterator[tuple[str, dict[str, Any]]] = iter(load_builtin(source[len("builtin:"):]))
    else:
        rows = _read_rows(Path(source).expanduser(), fmt)
    records = [_to_record(row, origin, fields, instruction) for origin, row in rows]
    if not records:
        raise TunelabError(f"{source}: no examples found; the file is empty")
    return records


def _read_rows(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not path.exists():
        raise TunelabError(f"{path}: no such file or directory; check data.source")
    if fmt == "auto":
        if path.is_dir():
            fmt = "hf_disk"
        else:
            fmt = _SUFFIX_FORMATS.get(path.suffix.lower(), "")
            if not fmt:
                raise TunelabError(
                    f"{path}: cannot tell the format from '{path.suffix}'; "
                    "set data.format to jsonl, csv, parquet or hf_disk"
                )
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows, "hf_disk": _hf_rows,
               "bigbench": bigbench_rows}
    if fmt not in readers:
        raise TunelabError(f"data.format '{fmt}': use auto, {', '.join(readers)}")
    return readers[fmt](path)


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


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
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


def _expect_object(row: Any, origin: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TunelabError(f"{origin}: expected a JSON object, got {type(row).__name__}")
    return row


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            # line_num is the physical line where this row ended (header is line 1).
            yield f"{path}:{reader.line_num}", dict(row)


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise TunelabError(f"{path}: not a readable Parquet file ({err})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}[row {i}]", row


def _hf_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
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
    row: dict[str, Any], origin: str, fields: dict[str, str], instruction: str | None
) -> Record:
    def column(name: str) -> Any:
        return row.get(fields.get(name, name))

    messages = column("messages")
    if messages is not None:
        return Record(messages=_check_messages(messages, origin), columns=row, origin=origin)
    prompt = column("instruction") if column("instruction") is not None else column("prompt")
    output = column("output") if column("output") is not None else column("completion")
    if output is None:
        wanted = fields.get("output", "output")
        raise TunelabError(
            f"{origin}: missing field '{wanted}' (columns: {', '.join(map(str, row))}); "
            "map the target column with data.fields, e.g. fields: {output: label}"
        )
    inp = column("input")
    return Record(
        instruction=str(prompt) if prompt is not None else (instruction or ""),
        input="" if inp is None else str(inp),
        output=str(output),
        columns=row,
        origin=origin,
    )


def _check_messages(messages: Any, origin: str) -> list[dict[str, str]]:
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
