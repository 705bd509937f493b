"""Quality of one set of examples: empty fields and cells, text broken by encoding, the
language mix, lengths (and, with a tokenizer, what max_length truncates), the label balance."""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from ftfy import fix_text as ftfy_fix
from ftfy.badness import is_bad

from tunelab.data.checks.items import CheckItem, CheckSet, normalize, words
from tunelab.data.tokenize import TokenizedExample

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff\ufffd]")
"""Control characters, zero-width marks, stray byte-order marks and U+FFFD (a failed decode)."""

STOPWORDS = {
    "en": {"the", "and", "is", "of", "to", "it", "that", "this", "with", "was", "for", "a"},
    "de": {"der", "die", "und", "ist", "nicht", "das", "ein", "eine", "mit", "zu", "den"},
    "fr": {"le", "la", "les", "et", "est", "une", "des", "pas", "que", "du", "dans"},
    "es": {"el", "los", "las", "y", "es", "una", "que", "del", "por", "con", "para"},
    "it": {"il", "di", "che", "non", "una", "sono", "della", "per", "gli", "con"},
    "pt": {"o", "os", "que", "não", "uma", "do", "da", "em", "para", "com"},
    "nl": {"de", "het", "een", "en", "niet", "van", "dat", "is", "met", "voor"},
}
SHOWN = 5
TOKEN_SAMPLE = 10_000
"""Token lengths and truncation of a larger set come from a seeded sample this big (a 95%
interval of about +-1 point on a share), so 100,000 rows are checked within a minute."""


def language(text: str) -> str:
    """A rough language guess: the writing system of the letters, and for Latin script the
    language whose common words it uses most ('latin' when none)."""
    if not text.isascii():
        scripts = Counter(unicodedata.name(ch, "UNKNOWN").split()[0]
                          for ch in text if ch.isalpha() and not ch.isascii())
        latin = sum(ch.isalpha() for ch in text if ch.isascii())
        top, count = scripts.most_common(1)[0] if scripts else ("LATIN", 0)
        if top not in ("LATIN",) and count > latin:
            return top.lower()
    tokens = set(words(text))
    votes = {lang: len(tokens & stop) for lang, stop in STOPWORDS.items()}
    best = max(votes, key=lambda lang: votes[lang])
    return best if votes[best] else "latin"


@dataclass
class Broken:
    origin: str
    field: str
    text: str
    fixed: str


@dataclass
class SetQuality:
    name: str
    size: int
    empty_input: int
    empty_output: int
    empty_cells: dict[str, int]
    """Per column of the source rows: cells that are empty or whitespace only."""
    mojibake: int
    control: int
    broken: list[Broken]
    """The first few examples of broken text, with ftfy's fix."""
    languages: dict[str, int]
    input_words: dict[str, float]
    output_words: dict[str, float]
    labels: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    truncated: int = 0
    lost_completion_tokens: int = 0
    token_sample: int = 0
    """Examples tokenised: all of them, or a seeded TOKEN_SAMPLE of a larger set (then the
    truncation counts are scaled up to the set: estimates)."""

    @property
    def imbalance(self) -> float | None:
        """Largest over smallest label count (None without labels)."""
        counts = [c for c in self.labels.values()]
        return max(counts) / min(counts) if len(counts) > 1 and min(counts) else None

    def to_json(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["broken"] = [b.__dict__ for b in self.broken]
        out["imbalance"] = self.imbalance
        return out


def summary(values: Sequence[float]) -> dict[str, float]:
    """mean, p50, p90, p99 and max."""
    if not values:
        return {}
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
            "p90": float(np.percentile(array, 90)), "p99": float(np.percentile(array, 99)),
            "max": float(array.max())}


def fix_text(text: str) -> str:
    """ftfy's repair, then control characters removed."""
    return CONTROL.sub("", ftfy_fix(text))


def set_quality(checked: CheckSet, labels: Sequence[str] | None,
                tokenize: Callable[[CheckItem], TokenizedExample] | None = None) -> SetQuality:
    """Every quality figure of one set; `labels`: the label set of classification data;
    `tokenize`: the run's template and tokenizer (token lengths and truncation)."""
    items = checked.items
    empty_cells: Counter[str] = Counter()
    mojibake = control = 0
    broken: list[Broken] = []
    for item in items:
        columns = item.record.columns if item.record is not None else {}
        for column, value in columns.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                empty_cells[str(column)] += 1
        for name, text in (("input", item.input), ("output", item.output)):
            bad, ctrl = is_bad(text), bool(CONTROL.search(text))
            mojibake += bad
            control += ctrl
            if (bad or ctrl) and len(broken) < SHOWN:
                broken.append(Broken(item.origin, name, text[:200], fix_text(text)[:200]))
    quality = SetQuality(
        name=checked.name, size=len(items),
        empty_input=sum(not i.input.strip() for i in items),
        empty_output=sum(not i.output.strip() for i in items),
        empty_cells=dict(empty_cells), mojibake=mojibake, control=control, broken=broken,
        languages=dict(Counter(language(i.input) for i in items).most_common()),
        input_words=summary([len(i.input.split()) for i in items]),
        output_words=summary([len(i.output.split()) for i in items]))
    if labels:
        known = {normalize(label): label for label in labels}
        counts = Counter(known.get(normalize(i.output), i.output) for i in items)
        quality.labels = {label: counts.get(label, 0) for label in labels} | {
            other: n for other, n in counts.items() if other not in known.values()}
    if tokenize is not None and items:
        sample = items if len(items) <= TOKEN_SAMPLE else [
            items[k] for k in sorted(random.Random(0).sample(range(len(items)), TOKEN_SAMPLE))]
        examples = [tokenize(i) for i in sample]
        scale = len(items) / len(sample)
        quality.tokens = summary([len(e.input_ids) for e in examples])
        quality.truncated = round(scale * sum(e.truncated for e in examples))
        quality.lost_completion_tokens = round(scale * sum(e.lost_completion for e in examples))
        quality.token_sample = len(sample)
    return quality


def label_set(sets: Sequence[CheckSet], given: Sequence[str] | None) -> list[str] | None:
    """The label set: eval.labels when given, else the outputs when they take few values
    (at most 20, each output seen at least twice on average over five)."""
    if given:
        return list(given)
    outputs = Counter(normalize(i.output) for s in sets for i in s.items)
    total = sum(outputs.values())
    if 2 <= len(outputs) <= 20 and total >= 5 * len(outputs):
        firsts: dict[str, str] = {}
        for s in sets:
            for i in s.items:
                firsts.setdefault(normalize(i.output), i.output.strip())
        return [firsts[key] for key, _ in outputs.most_common()]
    return None
