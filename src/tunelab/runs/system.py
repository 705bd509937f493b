"""A system: what produced a set of scores. The base model under k in-context examples, a
fine-tuned run's weights, or a named adapter on the base.

A `System` is its identity (weights + shots); its label ("base 4-shot", "fine-tuned",
"fine-tuned (RUN)") and its eval directory's name are derived from that identity here and
nowhere else, and code asks the object (`is_base`, `fine_tuned`, `named`) instead of
reading the label back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypedDict


class SystemJson(TypedDict):
    """A system's identity as stored beside an evaluation (`system_id`)."""

    shots: int
    fine_tuned: bool
    run: str | None
    adapter: str | None
    export: str | None


@dataclass(frozen=True)
class System:
    shots: int = 0
    fine_tuned: bool = False
    """Trained weights (a run's, or a named adapter's) rather than the base model alone."""
    run: str | None = None
    """The fine-tuned run's name where the system is named from outside its run directory
    (None: the run scored in its own directory)."""
    adapter: str | None = None
    """A named adapter of an AdapterSet (`tunelab eval` with several adapters)."""
    export: str | None = None
    """An exported artefact of the fine-tune, named by its format ('hf', 'gguf q8_0'):
    `tunelab export` scores it against the fine-tune it came from."""

    # --- the ways to make one ------------------------------------------------------------
    @classmethod
    def base(cls, shots: int = 0) -> System:
        return cls(shots=shots)

    @classmethod
    def tuned(cls, run: str | None = None, shots: int = 0) -> System:
        """A fine-tuned run's weights: unnamed inside the run's own directory, named (the run
        directory's name) where several runs are scored side by side."""
        return cls(shots=shots, fine_tuned=True, run=run)

    @classmethod
    def exported(cls, format_label: str) -> System:
        return cls(fine_tuned=True, export=format_label)

    @classmethod
    def named_adapter(cls, name: str, shots: int = 0) -> System:
        return cls(shots=shots, fine_tuned=True, adapter=name)

    # --- what it is ----------------------------------------------------------------------
    @property
    def is_base(self) -> bool:
        return not self.fine_tuned

    @property
    def label(self) -> str:
        """How tables, reports and the rating page name it."""
        if self.adapter is not None:
            return f"{self.adapter} {self.shots}-shot"
        if self.export is not None:
            return f"export {self.export}"
        if self.is_base:
            return f"base {self.shots}-shot"
        name = f"fine-tuned ({self.run})" if self.run else "fine-tuned"
        return f"{name} {self.shots}-shot" if self.shots else name

    @property
    def slug(self) -> str:
        """The label as a directory name: base 0-shot -> base-0-shot."""
        return slug(self.label)

    def named(self, run: str) -> System:
        """The same system as seen from outside its run directory (fine-tunes get the run's
        name; the base stays the base)."""
        if self.is_base or self.run or self.adapter is not None or self.export is not None:
            return self
        return System(self.shots, True, run)

    def __str__(self) -> str:
        return self.label

    # --- stored with every evaluation ----------------------------------------------------
    def to_json(self) -> SystemJson:
        return {"shots": self.shots, "fine_tuned": self.fine_tuned, "run": self.run,
                "adapter": self.adapter, "export": self.export}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None,  # Any: JSON from disk
                  label: str = "") -> System:
        """The identity stored beside an evaluation; an evaluation written before identities
        were stored has only its label, read here (the one place labels are read)."""
        if data:
            return cls(int(data.get("shots", 0)), bool(data.get("fine_tuned")), data.get("run"),
                       data.get("adapter"), data.get("export"))
        return from_label(label)


_BASE = re.compile(r"base (\d+)-shot")
_TUNED = re.compile(r"fine-tuned(?: \((?P<run>.+)\))?(?: (?P<shots>\d+)-shot)?")
_RUN_SHOTS = re.compile(r"(?P<run>.+) (?P<shots>\d+)-shot")


def from_label(label: str) -> System:
    """A system from a label written by an older tunelab ("base 4-shot", "fine-tuned",
    "fine-tuned (RUN)", and `tunelab eval --adapter RUN`'s "RUN 0-shot")."""
    if label == "base":  # the retention cache's base scores
        return System.base()
    if found := _BASE.fullmatch(label):
        return System.base(int(found.group(1)))
    if found := _TUNED.fullmatch(label):
        return System.tuned(found.group("run"), int(found.group("shots") or 0))
    if found := _RUN_SHOTS.fullmatch(label):
        return System.tuned(found.group("run"), int(found.group("shots")))
    return System.tuned(label or None)


def slug(text: str) -> str:
    """A name as a directory name: base 0-shot -> base-0-shot."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")
