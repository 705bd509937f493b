"""What a data check looks at: every example as a `CheckItem` (its input and output text), in
named `CheckSet`s whose `Role` says what a match between two sets means.

A role decides for itself: a trained set is where leaked items sit (and what `--fix` and
`data.dedup` may drop), a scored set is where a leaked item inflates a score, and a test role
stops `tunelab train` when its items are in the training data.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunelab.data.records import Record
from tunelab.data.splits import Splits

SPACE = re.compile(r"\s+")
NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Role:
    name: str
    trained: bool
    """Its items are trained on: a source of leakage, and what deduplication may drop."""
    scored: bool
    """A score is computed on its items: an item also trained on inflates that score."""
    guarded: bool = False
    """`tunelab train` refuses to start while any of its items are in the training data."""
    own: bool = True
    """The run's own data (its splits, or the checked file), not someone else's benchmark:
    overlap between two sets that are neither is not reported."""


TRAIN = Role("train", trained=True, scored=False)
VALIDATION = Role("validation", trained=False, scored=True)
TEST = Role("test", trained=False, scored=True, guarded=True)
EVALUATED = Role("evaluated", trained=False, scored=True, own=False)
"""An evaluation task, benchmark, retention task or BBQ set the run scores (or --against)."""
DATA = Role("data", trained=True, scored=False)
"""A lone data file: checked for duplicates and against --against tasks."""

HELD_OUT = Role("held-out train", trained=False, scored=False)
"""A held-out task's train split: evaluated tasks only, never trained on."""

SPLIT_ROLES = {"train": TRAIN, "validation": VALIDATION, "test": TEST}


@dataclass
class CheckItem:
    set_name: str
    index: int
    """Position in its set (its row order)."""
    origin: str
    input: str
    """The text the model reads: the record's input (and its instruction when instructions
    differ between records; a shared instruction is template, not data)."""
    output: str
    record: Record | None = None

    @property
    def input_key(self) -> str:
        return normalize(self.input)

    @property
    def example_key(self) -> str:
        return self.input_key + "\x00" + normalize(self.output)


@dataclass
class CheckSet:
    name: str
    role: Role
    items: list[CheckItem] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, role: Role, records: Sequence[Record],
           shared_instruction: bool | None = None) -> CheckSet:
        """A set from records; `shared_instruction` (default: decided from the records) says
        whether the instruction is left out of the compared input."""
        if shared_instruction is None:
            shared_instruction = instruction_is_shared(records)
        inputs = without_template([input_text(r, shared_instruction) for r in records])
        items = [CheckItem(name, i, r.origin, text, output_text(r), r)
                 for i, (r, text) in enumerate(zip(records, inputs, strict=True))]
        return cls(name, role, items)


def normalize(text: str) -> str:
    """Whitespace and case normalisation: the key of an exact duplicate."""
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    """The 13-gram tokens, normalised as lm-evaluation-harness's decontamination does:
    lower case, ASCII punctuation deleted, split on whitespace."""
    return text.lower().translate(NO_PUNCTUATION).split()


def instruction_is_shared(records: Sequence[Record]) -> bool:
    """True when the instructions take few values (a task's fixed instruction)."""
    distinct = {r.instruction for r in records}
    return len(distinct) <= max(10, len(records) // 20)


def input_text(record: Record, shared_instruction: bool) -> str:
    """What the model reads of a record, without the template around it; for a record with
    nothing of its own to read (raw text, a language-modelling task) its output: the text."""
    if record.messages is not None:
        text = "\n".join(m["content"] for m in record.messages[:-1] if m["role"] != "system")
    elif shared_instruction:
        text = record.input
    else:
        text = "\n".join(part for part in (record.instruction, record.input) if part.strip())
    return text if text.strip() else output_text(record)


def output_text(record: Record) -> str:
    """The completion: the output, or a conversation's last (assistant) turn."""
    return record.messages[-1]["content"] if record.messages is not None else record.output


TEMPLATED = 20
"""From this many items on, text that begins or ends every input of a set is its template."""


def without_template(texts: list[str]) -> list[str]:
    """The inputs without the words every one of them begins or ends with ("Review: ...
    Sentiment:"): a shared frame would make short inputs look alike to near-duplicate and
    13-gram detection. Sets smaller than TEMPLATED are left as they are."""
    if len(texts) < TEMPLATED:
        return texts
    prefix = os.path.commonprefix(texts)  # cut back to whole words: at whitespace
    cut = max((m.end() for m in SPACE.finditer(prefix)), default=0)
    prefix = prefix[:cut]
    suffix = os.path.commonprefix([t[::-1] for t in texts])[::-1]
    first = SPACE.search(suffix)
    suffix = suffix[first.start():] if first else ""
    if not prefix and not suffix:
        return texts
    return [t[len(prefix):len(t) - len(suffix)] if len(t) > len(prefix) + len(suffix) else t
            for t in texts]


def split_sets(splits: Splits, prefix: str = "", held_out: bool = False) -> list[CheckSet]:
    """A task's non-empty splits as sets, named `prefix + split`; whether the instruction is
    template is decided over all splits at once; a held-out task's train split is never
    trained on."""
    records = [r for part in splits.as_dict().values() for r in part]
    shared = instruction_is_shared(records)
    roles = dict(SPLIT_ROLES, train=HELD_OUT) if held_out else SPLIT_ROLES
    return [CheckSet.of(prefix + name, roles[name], part, shared)
            for name, part in splits.as_dict().items() if part]
