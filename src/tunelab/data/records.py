"""The record: one example in tunelab's own field names, whatever the source called them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """One example. Sources map their columns onto these fields.

    Alpaca-style data fills instruction/input/output; prompt/completion data fills
    instruction (the prompt) and output (the completion); chat data fills messages, whose
    last assistant turn is the completion.
    """

    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: list[dict[str, str]] | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # Any: JSON, CSV or Parquet values
    """The original row, for custom format strings."""
    origin: str = ""
    """Where it came from, e.g. 'train.jsonl:12', for error messages."""


def choice_record(origin: str, prompt: str, choices: list[str], gold: list[int],
                  **columns: object) -> Record:
    """A multiple-choice record: output is the (first) gold choice."""
    row = dict(columns, prompt=prompt, choices=choices, gold=gold, output=choices[gold[0]])
    return Record(input=str(columns.get("input", prompt)), output=choices[gold[0]],
                  columns=row, origin=origin)
