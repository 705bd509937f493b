"""One data check over named sets: overlap within and across them, conflicting labels, the
quality of each, likely label errors in the training data; the figures as JSON and a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunelab.core.deferred import deferred
from tunelab.data.checks.items import CheckItem, CheckSet
from tunelab.data.checks.overlap import Conflict, Overlap, conflicts, find_overlap
from tunelab.data.checks.quality import SetQuality, set_quality
from tunelab.data.tokenize import TokenizedExample

if TYPE_CHECKING:
    from tunelab.data.checks import label_errors as label_check
    from tunelab.data.checks.label_errors import LabelErrors
else:  # cleanlab and scikit-learn: 3 s to import, for a check of labelled data only
    label_check = deferred("tunelab.data.checks.label_errors")

SHOWN = 5


@dataclass
class Crossing:
    """Two sets that share items: `later`'s items found in `earlier`. When one of the two is
    trained on it is `earlier` (so `later` is the side a leak inflates)."""

    earlier: CheckSet
    later: CheckSet
    found: dict[str, int]
    """Per detector: items of `later` that match an item of `earlier` (an item matched by two
    detectors, through different partners, counts under both)."""
    earlier_items: set[int]
    """Positions in `earlier` of the items that match."""
    later_items: set[int]
    """Positions in `later` of the items that match (each once)."""
    examples: list[dict[str, str]]
    same_items: set[int] = field(default_factory=set)
    """Positions in `later` of the items that are the same example as one in `earlier`
    (exact or near duplicates; a shared 13-gram alone is contamination evidence, not a copy)."""

    @property
    def leak(self) -> bool:
        """Trained items that a score is computed on."""
        return self.earlier.role.trained and self.later.role.scored

    @property
    def guarded(self) -> bool:
        """Copies of a guarded set's items in the training data: `tunelab train` refuses to
        start (a shared 13-gram alone is reported, not refused)."""
        return self.leak and self.later.role.guarded and bool(self.same_items)

    @property
    def total(self) -> int:
        """Items of `later` found in `earlier`, each counted once."""
        return len(self.later_items)

    def to_json(self) -> dict[str, object]:
        return {"sets": [self.earlier.name, self.later.name], "leak": self.leak,
                "guarded": self.guarded, "found": self.found, "total": self.total,
                "copies": len(self.same_items), "examples": self.examples}


@dataclass
class DataCheck:
    sets: list[CheckSet]
    threshold: float
    within: dict[str, dict[str, int]]
    """Per set, per detector: items that repeat an earlier item of the same set."""
    crossings: list[Crossing]
    conflicts: list[Conflict]
    quality: list[SetQuality]
    label_errors: LabelErrors | None
    labels: list[str] | None
    notes: list[str] = field(default_factory=list)
    """What was not checked and why (a benchmark whose data is not here, ...)."""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per part: overlap, quality, label_errors."""
    within_items: dict[str, int] = field(default_factory=dict)
    """Per set: items that repeat an earlier item of it by any detector, each counted once."""
    duplicates: dict[str, int] = field(default_factory=dict)
    """Per set: duplicate examples (exact or near duplicates of an earlier item of it)."""
    drop: dict[str, set[int]] = field(default_factory=dict)
    """Per trained set: positions `--fix` and data.dedup drop (duplicates and leaked items)."""

    @property
    def guarded_leaks(self) -> list[Crossing]:
        return [c for c in self.crossings if c.guarded and c.total]

    @property
    def leaks(self) -> list[Crossing]:
        return [c for c in self.crossings if c.leak and c.total]

    def to_json(self) -> dict[str, object]:
        return {
            "threshold": self.threshold, "seconds": round(self.seconds, 3),
            "timings": {part: round(seconds, 3) for part, seconds in self.timings.items()},
            "sets": [{"name": s.name, "role": s.role.name, "size": len(s.items)}
                     for s in self.sets],
            "within": self.within, "within_items": self.within_items,
            "duplicates": self.duplicates,
            "across": [c.to_json() for c in self.crossings],
            "conflicts": {"groups": len(self.conflicts),
                          "items": sum(len(c.items) for c in self.conflicts),
                          "examples": [c.to_json() for c in self.conflicts[:SHOWN]]},
            "quality": [q.to_json() for q in self.quality],
            "labels": self.labels,
            "label_errors": self.label_errors.to_json() if self.label_errors else None,
            "drop": {name: len(positions) for name, positions in self.drop.items()},
            "notes": self.notes,
        }


@dataclass
class CheckOptions:
    threshold: float = 0.8
    """Near duplicates: the MinHash Jaccard threshold (0 turns them off)."""
    labels: list[str] | None = None
    """Classification data's label set (None: not classification)."""
    label_errors: bool = True
    tokenize: Callable[[CheckItem], TokenizedExample] | None = None
    """The run's template and tokenizer, for token lengths and truncation."""
    overlap_only: bool = False
    """Only what `tunelab train` checks before a model loads: overlap and conflicts."""


def check_sets(sets: Sequence[CheckSet], options: CheckOptions,
               notes: Sequence[str] = ()) -> DataCheck:
    """Every check over the sets (`options.overlap_only`: overlap and conflicts alone)."""
    start = time.perf_counter()
    overlap = find_overlap(sets, options.threshold)
    within = {s.name: overlap.within(n) for n, s in enumerate(sets)}
    within_items = {s.name: len(overlap.within_items(n)) for n, s in enumerate(sets)}
    repeats = {s.name: overlap.within_items(n, duplicates_only=True) for n, s in enumerate(sets)}
    crossings = [crossing(overlap, a, b) for a in range(len(sets)) for b in range(a + 1, len(sets))
                 if sets[a].role.own or sets[b].role.own]  # two benchmarks: not our business
    crossings = [c for c in crossings if c.total]
    found = conflicts(sets)
    timings = {"overlap": time.perf_counter() - start}
    quality: list[SetQuality] = []
    label_errors = None
    if not options.overlap_only:
        began = time.perf_counter()
        quality = [set_quality(s, options.labels, options.tokenize) for s in sets]
        timings["quality"] = time.perf_counter() - began
        trained = [item for s in sets if s.role.trained for item in s.items]
        if options.labels and options.label_errors and trained:
            began = time.perf_counter()
            label_errors = label_check.rank_label_errors(trained, options.labels)
            timings["label_errors"] = time.perf_counter() - began
    drop = {s.name: set(repeats[s.name]) for s in sets if s.role.trained}
    for c in crossings:
        if c.leak:
            drop[c.earlier.name].update(c.earlier_items)
    return DataCheck(list(sets), options.threshold, within, crossings, found, quality,
                     label_errors, options.labels, list(notes),
                     within_items=within_items,
                     duplicates={name: len(items) for name, items in repeats.items()},
                     seconds=time.perf_counter() - start, timings=timings, drop=drop)


def crossing(overlap: Overlap, earlier: int, later: int) -> Crossing:
    """What two sets share, counted on the later set's side; a trained set goes first."""
    if overlap.sets[later].role.trained and not overlap.sets[earlier].role.trained:
        earlier, later = later, earlier
    pairs = overlap.across(earlier, later)
    items = overlap.items
    found = {name: len({j for _, j in found}) for name, found in pairs.items()}
    examples = [{"detector": name, "item": items[j].origin, "matches": items[i].origin,
                 "input": items[j].input[:200]}
                for name, found in pairs.items() for i, j in found[:SHOWN]][:SHOWN]
    same = {items[j].index for d in overlap.found_by if d.same_example for _, j in pairs[d.name]}
    return Crossing(overlap.sets[earlier], overlap.sets[later], found,
                    {items[i].index for found in pairs.values() for i, _ in found},
                    {items[j].index for found in pairs.values() for _, j in found}, examples,
                    same)
