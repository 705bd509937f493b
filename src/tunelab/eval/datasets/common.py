"""What every benchmark reader builds on: the splits it returns (`TaskData`), seeded
train/validation/test splits of one list of examples, and multiple-choice records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.data import Record
from tunelab.errors import TunelabError


@dataclass
class TaskData:
    splits: dict[str, list[Record]]
    preamble: str = ""
    """Text the source puts once before the examples (BIG-bench's task_prefix)."""
    separator: str | None = None
    """The source's own text between in-context examples."""

    def split(self, name: str, option: str = "split") -> list[Record]:
        if name not in self.splits:
            raise TunelabError(
                f"{option} '{name}': this data has splits {', '.join(self.splits)}; choose one"
            )
        return self.splits[name]


def choice_record(origin: str, prompt: str, choices: list[str], gold: list[int],
                  **columns: Any) -> Record:
    """A multiple-choice record: output is the (first) gold choice."""
    row = dict(columns, prompt=prompt, choices=choices, gold=gold, output=choices[gold[0]])
    return Record(input=str(columns.get("input", prompt)), output=choices[gold[0]],
                  columns=row, origin=origin)
