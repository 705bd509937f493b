"""BIG-bench's JSON task format (task.json): the one parser for training and evaluation data.

A task.json is an object with an `examples` list; each example has an `input` and either
`target` (a text, or a list of acceptable texts) or `target_scores` ({choice: score}: a
multiple-choice item whose gold choices score highest). Task-level fields say how BIG-bench
formats a prompt:

    example_input_prefix + input [+ choice_prefix + choice ...] + example_output_prefix

with BIG-bench's defaults ("\\nQ: ", "\\nA: ", "\\n  choice: "; choices appended unless
append_choices_to_input is false, in BIG-bench's seeded order). `data/bigbench.py` reads a task
as training rows (every example kept) and `eval/datasets/bigbench.py` as evaluation records
(duplicate examples dropped, as BIG-bench drops them); what differs between the two (error
hints, origins, dropping) is a `Reading`, so the format itself is parsed once, here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.core.errors import TunelabError

BIGBENCH_SEED = 42
"""BIG-bench's default random seed (it orders the choices appended to an input)."""


@dataclass(frozen=True)
class Reading:
    """How one consumer reads task.json files: what its errors and origins say, and whether a
    repeated example counts once."""

    not_a_task: str
    """The error after "PATH: " when the file holds no 'examples' list."""
    origin: str
    """An example's origin, formatted with {path} and {index}."""
    needs_input: str
    """The error after "ORIGIN: " for an example that is not an object with an 'input'."""
    drop_duplicates: bool


@dataclass(frozen=True)
class Example:
    """One example of a task.json, as written (an object with an 'input')."""

    origin: str
    fields: dict[str, Any]  # Any: a task.json example's JSON values

    @property
    def input(self) -> object:
        return self.fields["input"]

    @property
    def target(self) -> object:
        """'target' as written (None when absent)."""
        return self.fields.get("target")

    @property
    def target_scores(self) -> dict[str, Any] | None:  # Any: JSON scores as written
        """'target_scores' ({choice: score}) when it is a non-empty object, else None."""
        scores = self.fields.get("target_scores")
        return scores if isinstance(scores, dict) and scores else None

    def target_texts(self) -> list[str]:
        """'target' as a list of texts: each item of a list, or the one value; [] when absent."""
        target = self.target
        if isinstance(target, list):
            return [str(t) for t in target]
        return [str(target)] if target is not None else []

    def best_choice(self) -> str:
        """The first of the highest-scored choices (needs target_scores)."""
        scores = self.target_scores or {}
        return max(scores, key=lambda choice: scores[choice])

    def gold(self) -> list[int]:
        """Indices of the highest-scored choices; an error when every choice scores the same."""
        scores = self.target_scores or {}
        best = max(scores.values())
        if len(scores) > 1 and best <= min(scores.values()):
            raise TunelabError(f"{self.origin}: target_scores has no choice scored above the others")
        return [j for j, choice in enumerate(scores) if scores[choice] == best]


@dataclass(frozen=True)
class PromptFormat:
    """How BIG-bench turns an example into a prompt (the task's prefixes, or the defaults)."""

    input_prefix: str = "\nQ: "
    output_prefix: str = "\nA: "
    choice_prefix: str = "\n  choice: "
    append_choices: bool = True

    def prompt(self, text: str, choices: list[str] | None = None) -> str:
        """input prefix + text [+ the choices in BIG-bench's seeded order] + output prefix."""
        shown = text
        if choices and self.append_choices:
            order = np.random.RandomState(BIGBENCH_SEED).permutation(sorted(choices))
            shown = text + self.choice_prefix + self.choice_prefix.join(order)
        return self.input_prefix + shown + self.output_prefix


@dataclass(frozen=True)
class BigbenchTask:
    """A read task.json: its top-level fields (name, description, task_prefix, ...)."""

    path: Path
    fields: dict[str, Any]  # Any: task.json's JSON values
    reading: Reading

    def examples(self) -> Iterator[Example]:
        """The examples in file order, each checked as it is reached (so the first bad one is
        the one reported); repeats skipped when the reading drops duplicates."""
        seen: set[str] = set()
        for index, example in enumerate(self.fields["examples"]):
            origin = self.reading.origin.format(path=self.path, index=index)
            if self.reading.drop_duplicates:
                key = json.dumps(example, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            if not isinstance(example, dict) or "input" not in example:
                raise TunelabError(f"{origin}: {self.reading.needs_input}")
            yield Example(origin, example)

    def prompt_format(self) -> PromptFormat:
        """The task's own prompt prefixes (BIG-bench's defaults where it names none)."""
        default = PromptFormat()
        return PromptFormat(
            input_prefix=str(self.fields.get("example_input_prefix", default.input_prefix)),
            output_prefix=str(self.fields.get("example_output_prefix", default.output_prefix)),
            choice_prefix=str(self.fields.get("choice_prefix", default.choice_prefix)),
            append_choices=bool(self.fields.get("append_choices_to_input", default.append_choices)),
        )


def read_json(path: Path) -> Any:  # Any: JSON from disk
    """A JSON file's value; a malformed file is an error naming the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunelabError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def read_task(path: Path, reading: Reading) -> BigbenchTask:
    """The task.json at `path`; an error (reading.not_a_task) when it holds no 'examples' list."""
    fields = read_json(path)
    if not isinstance(fields, dict) or not isinstance(fields.get("examples"), list):
        raise TunelabError(f"{path}: {reading.not_a_task}")
    return BigbenchTask(path, fields, reading)
