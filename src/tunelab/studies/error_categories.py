"""Error categories: what kind of wrong a prediction is, each decided by its own detector.

A detector says whether it applies to a task (`applies`: most need free text the model wrote,
"invalid label" needs a label set, "inconsistent" a robustness run) and whether one
prediction shows it (`detect`). They are heuristics meant to point at what the next
iteration's data should fix, and say what they count in their description:

- empty: nothing but whitespace.
- invalid_label: not one of the task's labels after label normalisation.
- too_long: ran to max_new_tokens without an end token, or more than twice the reference's
  words plus 10.
- repetition: a span of 1-8 words three times in a row ("the the the", "I love it. I love
  it. I love it."), or a word 3-gram three or more times anywhere.
- copied_prompt: a run of at least 4 words (and most of the answer, or 12+ words) copied from
  the input that the reference does not contain.
- misspelled: a word (3+ letters) that is neither in pyspellchecker's English dictionary nor in
  the item's input or reference.
- inconsistent: the prediction changed under some perturbation of the same item (from the
  robustness run's consistency.jsonl).
- unsupported_content: a number or a name (a capitalised word inside a sentence) found neither
  in the input nor in the reference: a proxy for hallucinated content.
- offensive, hurtful: the harm scorers of eval/harm.py flag the prediction (alt-profanity-check's
  probability >= 0.5; a word of HurtLex's conservative level), as the evaluation's harm rate
  counts them, so a right answer can carry them too.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from spellchecker import SpellChecker

from tunelab.core.labels import normalize_label
from tunelab.eval.harm import Hurtful, Offensive, TextScorer

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
TOKEN = re.compile(r"\w+")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class TaskContext:
    """What the detectors know of the task and side one prediction came from."""

    free_text: bool
    """The output type's predictions are text the model wrote (not a given choice)."""
    labels: tuple[str, ...] = ()
    """The task's label set, normalised (empty: an open answer)."""
    consistency: bool = False
    """A robustness run says, per item, whether its prediction changed under noise."""


@dataclass(frozen=True)
class ItemView:
    """One prediction as the detectors see it."""

    prediction: str
    reference: object
    """The gold answer: a text or a list of acceptable texts."""
    input: str
    hit_limit: bool = False
    """Generation ran to max_new_tokens without stopping."""
    changed_under_noise: bool | None = None

    @property
    def references(self) -> list[str]:
        refs = self.reference if isinstance(self.reference, list) else [self.reference]
        return [str(r) for r in refs]


class ErrorCategory:
    """One kind of error; subclasses set name and description and implement detect."""

    name: ClassVar[str]
    description: ClassVar[str]

    def applies(self, context: TaskContext) -> bool:
        """Whether the category can occur on this task (default: free-text predictions)."""
        return context.free_text

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        raise NotImplementedError


class Empty(ErrorCategory):
    name = "empty"
    description = "the prediction is empty"

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return not item.prediction.strip()


class InvalidLabel(ErrorCategory):
    name = "invalid_label"
    description = "not one of the task's labels (wrong format)"

    def applies(self, context: TaskContext) -> bool:
        return context.free_text and bool(context.labels)

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return normalize_label(item.prediction) not in context.labels


class TooLong(ErrorCategory):
    name = "too_long"
    description = "hit max_new_tokens without stopping, or > 2x the reference's words + 10"

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        longest = max(len(r.split()) for r in item.references)
        return item.hit_limit or len(item.prediction.split()) > 2 * longest + 10


class Repetition(ErrorCategory):
    name = "repetition"
    description = "1-8 words repeated 3 times in a row, or a word 3-gram 3+ times"

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        words = [w.lower() for w in TOKEN.findall(item.prediction)]
        for k in range(1, 9):
            if any(words[i:i + k] == words[i + k:i + 2 * k] == words[i + 2 * k:i + 3 * k]
                   for i in range(len(words) - 3 * k + 1)):
                return True
        grams = Counter(tuple(words[i:i + 3]) for i in range(len(words) - 2))
        return bool(grams) and max(grams.values()) >= 3


class CopiedPrompt(ErrorCategory):
    name = "copied_prompt"
    description = "4+ words copied from the input (most of the answer, or 12+) not in the reference"

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        words = [w.lower() for w in TOKEN.findall(item.prediction)]
        run = longest_common_run(words, [w.lower() for w in TOKEN.findall(item.input)])
        if len(run) < 4 or (len(run) < 0.8 * len(words) and len(run) < 12):
            return False
        copied = " ".join(run)
        return not any(copied in " ".join(TOKEN.findall(r.lower())) for r in item.references)


class Misspelled(ErrorCategory):
    name = "misspelled"
    description = "a word not in the English dictionary (pyspellchecker) nor in the input/reference"

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return bool(misspelled_words(item.prediction, [item.input, *item.references]))


class Inconsistent(ErrorCategory):
    name = "inconsistent"
    description = "the prediction changes under a perturbation of the same item (robustness run)"

    def applies(self, context: TaskContext) -> bool:
        return context.consistency

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return bool(item.changed_under_noise)


class UnsupportedContent(ErrorCategory):
    name = "unsupported_content"
    description = "a number or name found neither in the input nor in the reference"

    def applies(self, context: TaskContext) -> bool:
        return context.free_text and not context.labels

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return bool(unsupported(item.prediction, [item.input, *item.references]))


class HarmCategory(ErrorCategory):
    """A prediction one harm scorer (eval/harm.py) flags, on any task whose model writes text."""

    scorer: ClassVar[TextScorer]

    def detect(self, item: ItemView, context: TaskContext) -> bool:
        return self.scorer.flags([item.prediction])[0]


class OffensiveOutput(HarmCategory):
    scorer = Offensive()
    name = scorer.flag_name
    description = scorer.description


class HurtfulOutput(HarmCategory):
    scorer = Hurtful()
    name = scorer.flag_name
    description = scorer.description


CATEGORIES: tuple[ErrorCategory, ...] = (Empty(), InvalidLabel(), TooLong(), Repetition(),
                                         CopiedPrompt(), Misspelled(), Inconsistent(),
                                         UnsupportedContent(), OffensiveOutput(), HurtfulOutput())


def categories_for(context: TaskContext) -> list[ErrorCategory]:
    return [c for c in CATEGORIES if c.applies(context)]


def detect_errors(item: ItemView, context: TaskContext) -> list[str]:
    """The names of every applicable category the prediction shows."""
    return [c.name for c in categories_for(context) if c.detect(item, context)]


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """The longest run of consecutive words of `a` that also appears consecutively in `b`."""
    best, end = 0, 0
    previous = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best, end = current[j], i
        previous = current
    return list(a[end - best:end])


@functools.cache
def spelling() -> SpellChecker:
    return SpellChecker(language="en")


def misspelled_words(text: str, context: Sequence[str]) -> list[str]:
    """Words of 3+ letters in `text` that the dictionary and the context texts don't know."""
    known = {w.lower() for t in context for w in WORD.findall(t)}
    words = [w.lower() for w in WORD.findall(text) if len(w) >= 3]
    candidates = [w for w in words if w not in known and "'" not in w]
    return sorted(spelling().unknown(candidates)) if candidates else []


def unsupported(text: str, context: Sequence[str]) -> list[str]:
    """Numbers and names (capitalised words not opening a sentence) of `text` absent from
    every context text."""
    joined = " ".join(context)
    known_words = {w.lower() for w in TOKEN.findall(joined)}
    known_numbers = {n.replace(",", "") for n in NUMBER.findall(joined)}
    found = [n for n in NUMBER.findall(text) if n.replace(",", "") not in known_numbers]
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        words = WORD.findall(sentence)
        found += [w for w in words[1:] if w[:1].isupper() and w != "I"
                  and w.lower() not in known_words]
    return found
