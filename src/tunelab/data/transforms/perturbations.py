"""Robustness perturbations: noisy copies of an item's input text (HELM-style, our own lists).

A perturbation is a registered function `(text, rng, severity) -> text` wrapped in a
`Perturbation` object; `severity` in (0, 1] is the share of the eligible words, gaps or
characters it touches (`lowercase` / `uppercase` ignore it). The rng is seeded from
(seed, name, severity, item key) with a stable hash (`rng_for`), so every system scored on a
task sees the same perturbed input for the same item. A perturbation that finds something
eligible touches `max(1, round(severity * eligible))` places; one that finds nothing returns
the text unchanged (robustness reports count the items that actually changed), and none ever
turns a non-empty text into an empty one.

Word lists (keyboard neighbours, misspellings, contractions, slang, fillers, OCR confusions)
are JSON files in `lists/`, read once on first use. `perturb_record` applies a perturbation to
a record's input only (never its output, choices or targets); `augment_records` perturbs a
seeded share of training records (`data.augment`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import random
import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tunelab.core.errors import TunelabError

if TYPE_CHECKING:  # records are copied, never built: no need to load the data layer (torch)
    from tunelab.data import Record

Apply = Callable[[str, random.Random, float], str]
T = TypeVar("T")
LISTS = Path(__file__).parent / "lists"
PROTECTED_COLUMNS = frozenset({
    "choices", "gold", "target", "targets", "target_scores", "label", "labels", "answer",
    "answers", "output", "reference", "references", "completion", "response"})
"""Columns that hold what the model should produce: never perturbed, whatever their value."""


@dataclass(frozen=True)
class Perturbation:
    """One named way of adding noise to a text."""

    name: str
    description: str
    """One line, shown by `tunelab robustness --help` and in errors."""
    apply: Apply
    graded: bool = True
    """Whether severity changes the result (lowercase: no, so a sweep scores it once)."""

    def __call__(self, text: str, rng: random.Random, severity: float) -> str:
        """The perturbed text; the text itself when the result would be blank."""
        if not text:
            return text
        perturbed = self.apply(text, rng, severity)
        return perturbed if perturbed.strip() or not text.strip() else text


REGISTRY: dict[str, Perturbation] = {}


def register(name: str, description: str, graded: bool = True) -> Callable[[Apply], Apply]:
    """Decorator: register `(text, rng, severity) -> text` as the perturbation `name`
    (`graded=False`: it ignores severity)."""
    def add(apply: Apply) -> Apply:
        if name in REGISTRY:
            raise ValueError(f"perturbation '{name}' is registered twice")
        REGISTRY[name] = Perturbation(name, description, apply, graded)
        return apply
    return add


# ---- The perturbations -------------------------------------------------------------------

@register("typo", "keyboard-neighbour typos: letters replaced by an adjacent QWERTY key")
def typo(text: str, rng: random.Random, severity: float) -> str:
    neighbours = word_list("keyboard")
    eligible = [i for i, c in enumerate(text) if c.lower() in neighbours]
    chars = list(text)
    for i in pick(rng, eligible, severity):
        chars[i] = same_case(rng.choice(neighbours[text[i].lower()]), text[i])
    return "".join(chars)


@register("char_noise", "character noise: a letter inserted, deleted or swapped with the next")
def char_noise(text: str, rng: random.Random, severity: float) -> str:
    chosen = set(pick(rng, [i for i, c in enumerate(text) if c.isalpha()], severity))
    out: list[str] = []
    i = 0
    while i < len(text):
        char, following = text[i], text[i + 1:i + 2]
        if i not in chosen:
            out.append(char)
            i += 1
            continue
        operations = ["insert"]
        if out and out[-1].isalpha():  # a letter of this word stays: deleting cannot empty it
            operations.append("delete")
        if following.isalpha() and following != char:
            operations.append("swap")
        operation = rng.choice(operations)
        if operation == "swap":
            out += [following, char]
            i += 2
            continue
        if operation == "insert":
            letters = [c for c in string.ascii_lowercase if c not in (char.lower(), following.lower())]
            out += [char, same_case(rng.choice(letters), char)]
        i += 1
    return "".join(out)


@register("misspelling", "common misspellings: listed words replaced by a usual wrong spelling")
def misspelling(text: str, rng: random.Random, severity: float) -> str:
    wrong = word_list("misspellings")
    return replace_phrases(text, phrase_pattern(tuple(wrong)), severity, rng,
                           lambda key: (key, rng.choice(wrong[key])))


@register("lowercase", "the whole input in lower case", graded=False)
def lowercase(text: str, rng: random.Random, severity: float) -> str:
    return text.lower()


@register("uppercase", "the whole input in upper case", graded=False)
def uppercase(text: str, rng: random.Random, severity: float) -> str:
    return text.upper()


@register("contraction", "contractions expanded (don't -> do not) and expansions contracted")
def contraction(text: str, rng: random.Random, severity: float) -> str:
    table = contraction_table()
    return replace_phrases(text, phrase_pattern(tuple(table)), severity, rng, table.__getitem__)


@register("whitespace", "extra spaces, tabs or newlines between words")
def whitespace(text: str, rng: random.Random, severity: float) -> str:
    extras = (" ", "  ", "   ", "\t", " \t", "\n")
    return replace_gaps(text, rng, severity, lambda gap: gap + rng.choice(extras))


@register("filler", "filler words between words (uh, um, like, you know, I mean, ...)")
def filler(text: str, rng: random.Random, severity: float) -> str:
    fillers = word_list("fillers")
    return replace_gaps(text, rng, severity, lambda gap: f"{gap}{rng.choice(fillers)} ")


@register("punctuation", "punctuation characters removed")
def punctuation(text: str, rng: random.Random, severity: float) -> str:
    eligible = [i for i, c in enumerate(text) if unicodedata.category(c).startswith("P")]
    removed = set(pick(rng, eligible, severity))
    return "".join(c for i, c in enumerate(text) if i not in removed)


@register("slang", "informal spellings (you -> u, because -> cuz, going to -> gonna, ...)")
def slang(text: str, rng: random.Random, severity: float) -> str:
    table = slang_table()
    return replace_phrases(text, phrase_pattern(tuple(table)), severity, rng, table.__getitem__)


@register("ocr", "OCR confusions (rn <-> m, cl -> d, l -> 1, O -> 0, e -> c, S -> 5, ...)")
def ocr(text: str, rng: random.Random, severity: float) -> str:
    confusions = word_list("ocr")
    sources = sorted(confusions, key=len, reverse=True)
    found: list[tuple[int, str]] = []  # (position, source), non-overlapping, left to right
    i = 0
    while i < len(text):
        source = next((s for s in sources if text.startswith(s, i)), None)
        if source is None:
            i += 1
            continue
        found.append((i, source))
        i += len(source)
    out, end = [], 0
    for start, source in pick(rng, found, severity):
        out += [text[end:start], rng.choice(confusions[source])]
        end = start + len(source)
    return "".join(out) + text[end:]


# ---- What the perturbations share --------------------------------------------------------

@functools.cache
def word_list(name: str) -> Any:  # Any: JSON from disk (lists/*.json)
    """A JSON file of `lists/`, read once."""
    return json.loads((LISTS / f"{name}.json").read_text(encoding="utf-8"))


@functools.cache
def contraction_table() -> dict[str, tuple[str, str]]:
    """lower-cased contraction or expansion -> (its dictionary form, its counterpart)."""
    pairs = word_list("contractions").items()
    table = {short.lower(): (short, long) for short, long in pairs}
    table.update({long.lower(): (long, short) for short, long in pairs})
    return table


@functools.cache
def slang_table() -> dict[str, tuple[str, str]]:
    """lower-cased word or phrase -> (its dictionary form, its informal spelling)."""
    return {key.lower(): (key, informal) for key, informal in word_list("slang").items()}


def pick(rng: random.Random, eligible: Sequence[T], severity: float) -> list[T]:
    """A severity share of the eligible places, at least one, in their original order."""
    if not eligible:
        return []
    count = min(len(eligible), max(1, round(severity * len(eligible))))
    return [eligible[i] for i in sorted(rng.sample(range(len(eligible)), count))]


def same_case(letter: str, like: str) -> str:
    return letter.upper() if like.isupper() else letter


def match_case(found: str, key: str, replacement: str) -> str:
    """`replacement` cased as `found` was, relative to the dictionary form `key` (so "I'm"
    stays "I am", "Don't" gives "Do not", "YOU" gives "U")."""
    letters = [c for c in found if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters) and not key.isupper():
        return replacement.upper()
    if found[:1].isupper() and not key[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


@functools.cache
def phrase_pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    """Whole-word, case-insensitive matches of any key, longest first; the words of a phrase
    may be apart by any spaces or tabs and an apostrophe may be straight or curly."""
    def one(key: str) -> str:
        words = [re.escape(word).replace("'", "['’]") for word in key.split()]
        return r"[ \t]+".join(words)
    alternatives = "|".join(one(k) for k in sorted(keys, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?<!\w['’])(?:{alternatives})(?!\w)(?!['’]\w)", re.IGNORECASE)


def replace_phrases(text: str, pattern: re.Pattern[str], severity: float, rng: random.Random,
                    lookup: Callable[[str], tuple[str, str]]) -> str:
    """Replace a severity share of the pattern's matches; `lookup(normalised match)` gives
    (the dictionary form, its replacement), cased like the match."""
    out, end = [], 0
    for match in pick(rng, list(pattern.finditer(text)), severity):
        found = match.group()
        key, replacement = lookup(" ".join(found.replace("’", "'").lower().split()))
        out += [text[end:match.start()], match_case(found, key, replacement)]
        end = match.end()
    return "".join(out) + text[end:]


def replace_gaps(text: str, rng: random.Random, severity: float,
                 new_gap: Callable[[str], str]) -> str:
    """Replace a severity share of the whitespace runs between words by `new_gap(run)`."""
    gaps = [m for m in re.finditer(r"\s+", text) if 0 < m.start() and m.end() < len(text)]
    out, end = [], 0
    for gap in pick(rng, gaps, severity):
        out += [text[end:gap.start()], new_gap(gap.group())]
        end = gap.end()
    return "".join(out) + text[end:]


# ---- Choosing perturbations --------------------------------------------------------------

def perturbation_names() -> list[str]:
    """Every registered perturbation, in registration order."""
    return list(REGISTRY)


def get_perturbation(name: str) -> Perturbation:
    if name not in REGISTRY:
        raise TunelabError(f"perturbation '{name}': unknown; choose from "
                           f"{', '.join(perturbation_names())}")
    return REGISTRY[name]


def parse_perturbations(text: str | Sequence[str],
                        option: str = "--perturbations") -> list[Perturbation]:
    """Perturbations from "typo,lowercase" or a list of names ("all": every one)."""
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    if not names:
        raise TunelabError(f"{option}: no perturbation given; choose from "
                           f"{', '.join(perturbation_names())} (or all)")
    if "all" in names:
        return list(REGISTRY.values())
    try:
        return [get_perturbation(name) for name in dict.fromkeys(names)]
    except TunelabError as err:
        raise TunelabError(f"{option}: {err}") from None


def check_severity(severity: float, option: str = "--severity") -> float:
    """The severity if it is in (0, 1], else a one-line error naming the option."""
    if isinstance(severity, bool) or not isinstance(severity, (int, float)) or not (
            0 < severity <= 1):
        raise TunelabError(f"{option} {severity!r}: must be in (0, 1], the share of words or "
                           "characters touched, e.g. 0.1")
    return float(severity)


# ---- Texts and records -------------------------------------------------------------------

def rng_for(seed: int, name: str, severity: float, key: str) -> random.Random:
    """The rng of one (seed, perturbation, severity, item), the same in every process."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{float(severity)!r}\0{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def perturb_text(perturbation: Perturbation, text: str, seed: int, severity: float,
                 key: str) -> str:
    """`text` perturbed as item `key` always is for this seed and severity."""
    severity = check_severity(severity)
    return perturbation(text, rng_for(seed, perturbation.name, severity, key), severity)


def perturb_record(record: Record, perturbation: Perturbation, severity: float, seed: int,
                   key: str, instruction: bool = False) -> Record:
    """A copy of `record` whose input text alone is perturbed: the last user turn of a chat
    record, else `input`, else `instruction` (where prompt/completion data keeps its prompt);
    with `instruction=True` also the instruction beside a separate input. String columns
    equal to or containing a perturbed text follow it (format templates read them), except
    the ones holding the answer (`PROTECTED_COLUMNS`, or equal to the output)."""
    perturbed = dataclasses.replace(record, messages=copy.deepcopy(record.messages),
                                    columns=copy.deepcopy(record.columns))
    changes: list[tuple[str, str]] = []  # (original, perturbed)

    def perturb(text: str, part: str) -> str:
        new = perturb_text(perturbation, text, seed, severity, key + part)
        changes.append((text, new))
        return new

    if perturbed.messages is not None:
        users = [m for m in perturbed.messages if m.get("role") == "user"]
        if not users or not users[-1].get("content"):
            raise no_input(record)
        users[-1]["content"] = perturb(users[-1]["content"], "")
    elif perturbed.input:
        perturbed.input = perturb(perturbed.input, "")
        if instruction and perturbed.instruction:
            perturbed.instruction = perturb(perturbed.instruction, "/instruction")
    elif perturbed.instruction:
        perturbed.instruction = perturb(perturbed.instruction, "")
    else:
        raise no_input(record)
    for name, value in perturbed.columns.items():
        if isinstance(value, str) and name not in PROTECTED_COLUMNS and not (
                record.output and value == record.output):
            perturbed.columns[name] = follow(value, changes)
    return perturbed


def no_input(record: Record) -> TunelabError:
    return TunelabError(f"{record.origin or 'a record'}: has no input text to perturb "
                        "(no input, instruction or user message)")


def follow(value: str, changes: list[tuple[str, str]]) -> str:
    """A column value with each perturbed text replaced where it appears as a whole."""
    for original, new in changes:
        if value == original:
            return new
        if original != new and original in value:
            value = re.sub(rf"(?<!\w){re.escape(original)}(?!\w)", _literally(new), value)
    return value


def _literally(text: str) -> Callable[[re.Match[str]], str]:
    """A `re.sub` replacement inserting `text` as it is (no backslash escapes)."""
    return lambda _: text


def augment_records(records: Sequence[Record], perturbations: Sequence[Perturbation],
                    share: float, severity: float, seed: int) -> list[Record]:
    """A new list, order kept, in which a seeded `share` of the records (exactly
    round(share * n)) carry one perturbation each, chosen at random from `perturbations`."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise TunelabError(f"data.augment.share {share!r}: must be in [0, 1], the share of "
                           "training records perturbed, e.g. 0.3")
    severity = check_severity(severity, "data.augment.severity")
    if not perturbations:
        raise TunelabError("data.augment.perturbations: empty; choose from "
                           f"{', '.join(perturbation_names())}")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(records)), round(share * len(records))))
    augmented = list(records)
    for index in chosen:
        record = records[index]
        perturbation = rng.choice(list(perturbations))
        noisy = perturb_record(record, perturbation, severity, seed, record.origin or str(index))
        augmented[index] = dataclasses.replace(  # `tunelab data inspect` shows which it got
            noisy, origin=f"{record.origin or index} +{perturbation.name}@{severity:g}")
    return augmented
