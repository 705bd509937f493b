"""What every benchmark reader builds on: the splits it returns (`TaskData`), seeded
train/validation/test splits of one list of examples, and multiple-choice records."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tunelab.config import DataConfig
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


def seeded_splits(records: list[Record], config: DataConfig, where: str) -> dict[str, list[Record]]:
    """train/validation/test by data.test_size and validation_size, as tunelab.data does."""
    order = list(range(len(records)))
    random.Random(config.split_seed).shuffle(order)

    def count(size: float, option: str) -> int:
        if size < 0:
            raise TunelabError(f"data.{option}={size}: must be >= 0")
        return int(round(size * len(records))) if size < 1 else int(size)

    n_test = count(config.test_size, "test_size")
    n_val = count(config.validation_size, "validation_size")
    if n_test + n_val > len(records):
        raise TunelabError(
            f"{where}: {len(records)} examples are fewer than test_size={config.test_size} + "
            f"validation_size={config.validation_size}; lower them"
        )
    shuffled = [records[i] for i in order]
    return {"train": shuffled[n_test + n_val:], "validation": shuffled[n_test:n_test + n_val],
            "test": shuffled[:n_test]}


def choice_record(origin: str, prompt: str, choices: list[str], gold: list[int],
                  **columns: Any) -> Record:
    """A multiple-choice record: output is the (first) gold choice."""
    row = dict(columns, prompt=prompt, choices=choices, gold=gold, output=choices[gold[0]])
    return Record(input=str(columns.get("input", prompt)), output=choices[gold[0]],
                  columns=row, origin=origin)
