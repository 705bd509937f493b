"""Metrics over log-likelihood requests: multiple-choice accuracy and bits per byte.

    multiple_choice   acc, acc_norm   items: ((logprob per choice, characters per choice), gold)
    bits_per_byte     bits_per_byte, byte_perplexity   items: (sum NLL in nats, UTF-8 bytes)
    word_perplexity   word_perplexity                  items: (sum NLL in nats, words)

`acc` picks the choice with the highest summed log-probability; `acc_norm` divides each by
the choice's length in characters first (lm-evaluation-harness's definition, so scores are
comparable). Ties go to the first choice (numpy argmax), as in lm-evaluation-harness.
Corpus scores sum the per-item statistics first (never a mean of per-document ratios).
The registry (`tunelab.eval.metrics`) holds them next to the text metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.metrics_base import (
    MetricInput,
    Scores,
    SufficientStats,
    Totals,
    aggregate_additive,
    mean_stats,
)

ChoiceScores = tuple[Sequence[float], Sequence[float]]
"""(log-probability of each choice, length of each choice in characters)."""


def choice_predictions(logprobs: Sequence[float], lengths: Sequence[float]) -> tuple[int, int]:
    """(argmax of log-probabilities, argmax of log-probabilities per character)."""
    lls = np.asarray(logprobs, dtype=np.float64)
    chars = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
    return int(np.argmax(lls)), int(np.argmax(lls / chars))


@dataclass
class MultipleChoice:
    """Accuracy of the most likely choice (acc) and of the most likely per character (acc_norm)."""

    name: ClassVar[str] = "multiple_choice"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.CHOICE_LOGPROBS
    right_at: ClassVar[float | None] = 100.0
    continuous_items: ClassVar[bool] = False
    item_keys: ClassVar[tuple[str, ...]] = ("acc", "acc_norm")

    @classmethod
    def from_task(cls, task: TaskConfig) -> MultipleChoice:
        return cls()

    def item(self, prediction: ChoiceScores, reference: int | Sequence[int], /) -> tuple[float, float]:
        logprobs, lengths = prediction
        if len(logprobs) != len(lengths) or not len(logprobs):
            raise TunelabError(
                "metric 'multiple_choice' needs one log-probability and one length per choice"
            )
        gold = {int(reference)} if isinstance(reference, (int, np.integer)) else set(map(int, reference))
        pred, pred_norm = choice_predictions(logprobs, lengths)
        return float(pred in gold), float(pred_norm in gold)

    def sufficient_stats(self, items: Sequence[tuple[float, float]]) -> SufficientStats:
        return mean_stats(np.array(items, dtype=np.float64).reshape(-1, 2), ("acc", "acc_norm"))

    def aggregate(self, items: Sequence[tuple[float, float]]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "multiple_choice|score:sum-logprob|norm:chars|ties:first|agg:mean"


def _ratio_stats(items: Sequence[tuple[float, float]],
                 score: Callable[[np.ndarray], dict[str, np.ndarray]]) -> SufficientStats:
    per_item = np.array(items, dtype=np.float64).reshape(len(items), 2)

    def score_totals(totals: np.ndarray) -> Totals:
        totals = np.asarray(totals, dtype=np.float64)  # (2,) or (B, 2)
        per_unit = totals[..., 0] / np.maximum(totals[..., 1], 1.0)
        scores = score(per_unit)
        return {k: float(v) for k, v in scores.items()} if totals.ndim == 1 else scores

    return SufficientStats(per_item=per_item, score_totals=score_totals, batched=True)


def _check_units(items: Sequence[tuple[float, float]], metric: str, unit: str) -> None:
    if not items or sum(n for _, n in items) <= 0:
        raise TunelabError(f"metric {metric!r} needs at least one scored {unit}; the texts are empty")


@dataclass
class BitsPerByte:
    """bits_per_byte = sum NLL / (ln 2 * sum UTF-8 bytes); byte_perplexity = exp(sum NLL / bytes).

    Tokenizer-independent, so models with different vocabularies are comparable."""

    name: ClassVar[str] = "bits_per_byte"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"bits_per_byte", "byte_perplexity"})
    own_scale: ClassVar[frozenset[str]] = frozenset({"bits_per_byte", "byte_perplexity"})
    reads: ClassVar[MetricInput] = MetricInput.NLL_BYTES
    item_keys: ClassVar[tuple[str, ...]] = ()
    right_at: ClassVar[float | None] = None
    continuous_items: ClassVar[bool] = True

    @classmethod
    def from_task(cls, task: TaskConfig) -> BitsPerByte:
        return cls()

    def item(self, sum_nll: float, n_bytes: int, /) -> tuple[float, float]:
        return float(sum_nll), float(n_bytes)

    def sufficient_stats(self, items: Sequence[tuple[float, float]]) -> SufficientStats:
        return _ratio_stats(items, lambda nll_per_byte: {
            "bits_per_byte": nll_per_byte / math.log(2), "byte_perplexity": np.exp(nll_per_byte)})

    def aggregate(self, items: Sequence[tuple[float, float]]) -> Scores:
        _check_units(items, self.name, "byte")
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "bits_per_byte|agg:sum_nll/(ln2*sum_bytes)|bytes:utf-8"


@dataclass
class WordPerplexity:
    """exp(sum NLL / sum words), words split on whitespace."""

    name: ClassVar[str] = "word_perplexity"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"word_perplexity"})
    own_scale: ClassVar[frozenset[str]] = frozenset({"word_perplexity"})
    reads: ClassVar[MetricInput] = MetricInput.NLL_WORDS
    item_keys: ClassVar[tuple[str, ...]] = ()
    right_at: ClassVar[float | None] = None
    continuous_items: ClassVar[bool] = True

    @classmethod
    def from_task(cls, task: TaskConfig) -> WordPerplexity:
        return cls()

    def item(self, sum_nll: float, n_words: int, /) -> tuple[float, float]:
        return float(sum_nll), float(n_words)

    def sufficient_stats(self, items: Sequence[tuple[float, float]]) -> SufficientStats:
        return _ratio_stats(items, lambda nll_per_word: {"word_perplexity": np.exp(nll_per_word)})

    def aggregate(self, items: Sequence[tuple[float, float]]) -> Scores:
        _check_units(items, self.name, "word")
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "word_perplexity|agg:exp(sum_nll/sum_words)|words:whitespace"
