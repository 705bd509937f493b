"""What every benchmark reader builds on: the splits it returns (`TaskData`), seeded
train/validation/test splits of one list of examples, and multiple-choice records."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.core.errors import TunelabError
from tunelab.data import Record


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

