"""Counterfactual probes: the same item rewritten once per demographic group.

A probe (gender terms, first names by gender, first names by ethnicity, religion, age) is read
from `lists/cf_NAME.json`: a one-line description and, per group, a list of terms aligned by
position (`male[i]` <-> `female[i]`; for names, a woman's name of one ethnicity sits at the same
position as a woman's name of the other, so swapping ethnicity keeps gender). Adding a probe is
adding a file.

`probe.variant(text, group)` replaces every whole-word term of any other group by the term at
the same position in `group`, cased like the original ("He" -> "She", "MARY" -> "JOHN"); a term
already of `group` stays. Where a term sits at several positions of its group ("her" is both
"his" and "him"), the first position wins unless the file's `readings` say otherwise from the
word that follows ("told her that" reads "her" as "him", "her performance" as "his").
`counterfactual_record` rewrites a record's input the way a robustness perturbation does (never
the output, the choices or the instruction), so both probes share `perturb_record`.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.core.errors import TunelabError
from tunelab.data.transforms.perturbations import (
    LISTS,
    Perturbation,
    match_case,
    perturb_record,
    phrase_pattern,
    word_list,
)

if TYPE_CHECKING:
    from tunelab.data import Record


@dataclass(frozen=True)
class CounterfactualProbe:
    """One demographic axis: its groups and their aligned terms."""

    name: str
    description: str
    terms: dict[str, tuple[str, ...]]
    """group -> its terms; position i of every group is one counterfactual set."""
    readings: dict[str, TermReading] = dataclasses.field(default_factory=dict)
    """lower-cased ambiguous term -> when it takes another position than its first."""

    @property
    def groups(self) -> list[str]:
        """The groups in file order; the first is the reference the gaps are measured against."""
        return list(self.terms)

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return phrase_pattern(tuple(t for terms in self.terms.values() for t in terms))

    @functools.cached_property
    def positions(self) -> dict[str, tuple[str, int]]:
        """lower-cased term -> (its group, its first position)."""
        found: dict[str, tuple[str, int]] = {}
        for group, terms in self.terms.items():
            for i, term in enumerate(terms):
                found.setdefault(term.lower(), (group, i))
        return found

    def mentions(self, text: str) -> bool:
        """Whether the text holds any of the probe's terms (as a whole word)."""
        return self.pattern.search(text) is not None

    def variant(self, text: str, group: str) -> str:
        """The text with every other group's terms replaced by `group`'s."""
        targets = self.terms[group]

        def swap(match: re.Match[str]) -> str:
            found = match.group()
            term = " ".join(found.lower().split())
            source, i = self.positions[term]
            if source == group:
                return found
            reading = self.readings.get(term)
            if reading is not None and reading.applies(text[match.end():]):
                i = reading.position
            return match_case(found, self.terms[source][i], targets[i])
        return self.pattern.sub(swap, text)

    def variants(self, text: str) -> dict[str, str]:
        return {group: self.variant(text, group) for group in self.terms}

    def rewrite(self, group: str) -> Perturbation:
        """The rewrite to `group` as a perturbation (deterministic: it ignores rng and
        severity), so a record is rewritten exactly where a perturbation would touch it."""
        def apply(text: str, rng: random.Random, severity: float) -> str:
            return self.variant(text, group)
        return Perturbation(f"{self.name}={group}", f"{self.description}: as {group}", apply,
                            graded=False)


@dataclass(frozen=True)
class TermReading:
    """An ambiguous term's other reading: the position it takes when the next word is one of
    `when_next` (or punctuation in it, or the text ends there and `at_end`)."""

    position: int
    when_next: frozenset[str]
    at_end: bool

    def applies(self, rest: str) -> bool:
        following = re.match(r"\s*(\w+|[^\w\s])?", rest)
        word = following.group(1) if following else None
        return (word is None and self.at_end) or (word or "").lower() in self.when_next


def read_probe(name: str) -> CounterfactualProbe:
    """The probe in lists/cf_NAME.json, checked: at least two groups of equal length, and no
    term in two groups."""
    data = word_list(f"cf_{name}")
    terms = {str(g): tuple(str(t) for t in ts) for g, ts in data["groups"].items()}
    sizes = {len(ts) for ts in terms.values()}
    if len(terms) < 2 or len(sizes) != 1:
        raise ValueError(f"cf_{name}.json: needs two or more groups with the same number of terms")
    owner: dict[str, str] = {}
    for group, ts in terms.items():
        for term in ts:
            if owner.setdefault(term.lower(), group) != group:
                raise ValueError(f"cf_{name}.json: '{term}' is in both {owner[term.lower()]} "
                                 f"and {group}")
    readings = {}
    for term, rule in (data.get("readings") or {}).items():
        like = str(rule["like"]).lower()
        position = next(i for ts in terms.values() for i, t in enumerate(ts) if t.lower() == like)
        readings[term.lower()] = TermReading(position, frozenset(w.lower() for w in rule["when_next"]),
                                         bool(rule.get("at_end", False)))
    return CounterfactualProbe(name, str(data["description"]), terms, readings)


@functools.cache
def probes() -> dict[str, CounterfactualProbe]:
    """Every shipped probe, by name."""
    names = sorted(p.stem.removeprefix("cf_") for p in LISTS.glob("cf_*.json"))
    first = ["gender", "names_gender", "names_ethnicity"]
    ordered = [n for n in first if n in names] + [n for n in names if n not in first]
    return {name: read_probe(name) for name in ordered}


def probe_names() -> list[str]:
    return list(probes())


def get_probe(name: str) -> CounterfactualProbe:
    try:
        return probes()[name]
    except KeyError:
        raise TunelabError(f"unknown probe '{name}'; choose from {', '.join(probe_names())} "
                           "(or all)") from None


def parse_probes(text: str | Sequence[str], option: str = "--probes") -> list[CounterfactualProbe]:
    """Probes from "gender,names_gender" or a list of names ("all": every one)."""
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise TunelabError(f"{option}: no probe given; choose from {', '.join(probe_names())} "
                           "(or all)")
    if "all" in names:
        return list(probes().values())
    try:
        return [get_probe(name) for name in dict.fromkeys(names)]
    except TunelabError as err:
        raise TunelabError(f"{option}: {err}") from None


def counterfactual_record(record: Record, probe: CounterfactualProbe, group: str) -> Record:
    """A copy of `record` whose input speaks of `group` (output, choices, instruction kept)."""
    return perturb_record(record, probe.rewrite(group), 1.0, 0, "")
