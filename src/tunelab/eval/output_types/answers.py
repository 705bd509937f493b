"""A record's gold answer, shared by the output types: the task's `target` column (a text or
a list of acceptable texts), else the record's output (the last turn of a chat record)."""

from __future__ import annotations

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Record


def reference_of(task: TaskConfig, record: Record) -> str | list[str]:
    """The gold answer: the `target` column (text or list of texts), else the record's output."""
    if task.target:
        if task.target not in record.columns:
            raise TunelabError(f"{task.where('target')}: target '{task.target}' is no column of "
                               f"the data ({record.origin} has {', '.join(map(str, record.columns))}"
                               "); set target to one of them")
        value = record.columns[task.target]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)
    if record.messages is not None:
        return record.messages[-1]["content"]
    return record.output
