"""The metric protocol shared by every metric: per-item values plus a corpus aggregation.

A metric follows lm-evaluation-harness's split: `item()` turns one (prediction, reference)
pair into a per-item value, and `aggregate()` turns all per-item values into corpus scores.
Every metric here can also express its per-item values as *additive sufficient statistics*
(`sufficient_stats()`): a row of numbers per item whose column sums determine the corpus
score (BLEU's n-gram counts, ROUGE's F-measures, a confusion-matrix cell, ...). That is
what makes bootstrap resampling cheap and correct for corpus metrics: resampling items is a
matrix product of resample counts with the statistics, then one scoring call per resample.

A metric also says what it reads (`reads`: prediction/reference text pairs, or a quantity an
output type measures, such as summed NLL and token counts) and builds itself from a task
(`from_task`: e.g. classification's label set is the task's eval.labels), so evaluation never
asks for a metric by name.

Scale: every score is reported on a 0-100 scale (percent), except `mcc` (-1..1),
`perplexity`/`nll_per_token` (raw), and BLEU's `bp`/`ratio` factors (as sacrebleu prints
them). Per-item values stay in their natural unit (EM 0/1, F-measure 0..1, counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError

Reference = str | Sequence[str]
"""One item's reference: a string, or a list of acceptable references."""

Scores = dict[str, float]
Totals = Mapping[str, float | np.ndarray]
"""Scores of column totals: a float each, or a (B,) array each for (B, D) totals (batched)."""


class MetricInput(Enum):
    """What a metric's `item()` takes, one entry per scored item.

    An output type provides some of these (generate: text and completion NLL; rolling: NLL
    over tokens, bytes and words; ...), and runs a request only when a task metric reads it.
    """

    TEXT = "text"
    """(prediction, reference): generated or chosen text against the gold answer(s)."""
    NLL_TOKENS = "nll_tokens"
    """(summed NLL in nats, tokens): of the gold completion, or of a whole text."""
    NLL_BYTES = "nll_bytes"
    """(summed NLL in nats, UTF-8 bytes) of a whole text."""
    NLL_WORDS = "nll_words"
    """(summed NLL in nats, whitespace-separated words) of a whole text."""
    CHOICE_LOGPROBS = "choice_logprobs"
    """((log-probability per choice, characters per choice), gold choice indices)."""


@dataclass
class SufficientStats:
    """Per-item additive statistics and the function that scores their column totals.

    `score_totals(totals)` must give the same scores as `aggregate()` when `totals` is
    `per_item.sum(0)`. When `batched` is true it also accepts totals of shape (B, D) and
    returns (B,)-shaped arrays, so bootstrap scoring needs no Python loop.
    """

    per_item: np.ndarray  # (N, D): one row of statistics per item
    score_totals: Callable[[np.ndarray], Totals]
    batched: bool = False


@runtime_checkable
class Metric(Protocol):
    """What every metric provides. Options are dataclass fields set at construction."""

    name: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]]
    """Score keys where smaller is better (e.g. perplexity); used by paired_bootstrap."""
    own_scale: ClassVar[frozenset[str]]
    """Score keys not on the 0-100 scale (MCC, perplexity, bits per byte, BLEU's bp and
    ratio): tables show them with three decimals, percentages with two."""
    reads: ClassVar[MetricInput]
    """What `item()` scores: text pairs, or a quantity an output type measures."""
    item_keys: ClassVar[tuple[str, ...]]
    """Score keys that are a mean of per-item scores (`aggregate([item])[key]`), so one item's
    score means something on its own (accuracy, rougeL, ...); empty for corpus-level scores
    (BLEU, perplexity), whose one-item value is a sentence-level score."""
    right_at: ClassVar[float | None]
    """The one-item score (0-100) from which an item counts as right (100: exactly right;
    50 for overlap scores such as ROUGE or token F1); None: no notion of right (perplexity)."""
    continuous_items: ClassVar[bool]
    """Whether one item's score is graded on a scale (ROUGE, BLEU, chrF, token F1, perplexity)
    rather than right or wrong (accuracy, exact match: 0 or 100). A graded score has no line
    of right that everyone would choose (`right_at` is a default, not a fact), so
    `tunelab compare` ranks its items by the paired score difference unless the user sets
    one (`--pass`)."""

    @classmethod
    def from_task(cls, task: TaskConfig) -> Metric:
        """The metric with the options a task implies (most metrics: their defaults)."""
        ...

    def item(self, prediction: Any, reference: Any, /) -> Any:  # Any: each metric's own types
        """The per-item value for one prediction and its reference(s)."""
        ...

    def aggregate(self, items: Sequence[Any]) -> Scores:  # Any: as item returns (per metric)
        """Corpus-level scores from all per-item values."""
        ...

    def signature(self) -> str:
        """A string naming every setting that changes the number, to make scores comparable."""
        ...


@runtime_checkable
class AdditiveMetric(Metric, Protocol):
    """A metric whose corpus score is a function of column sums of per-item statistics."""

    def sufficient_stats(self, items: Sequence[Any]  # Any: as item returns (per metric)
                         ) -> SufficientStats:
        """Per-item statistics for `items` and how to score their totals."""
        ...


def reference_list(reference: Reference, metric: str) -> list[str]:
    """Normalise one item's reference to a non-empty list of strings.

    Raises:
        TunelabError: if the reference is an empty list or not text.
    """
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise TunelabError(
            f"metric {metric!r} got an item with an empty reference list; "
            "give at least one reference per prediction"
        )
    for ref in refs:
        if not isinstance(ref, str):
            raise TunelabError(
                f"metric {metric!r} got a reference of type {type(ref).__name__}; "
                "references must be strings or lists of strings"
            )
    return refs


def check_not_empty(items: Sequence[object], metric: str) -> None:
    """Raise a TunelabError when there is nothing to aggregate."""
    if len(items) == 0:
        raise TunelabError(f"metric {metric!r} got no items; give at least one prediction")


def mean_stats(per_item: np.ndarray, keys: Sequence[str]) -> SufficientStats:
    """Sufficient statistics for metrics that are a mean of per-item values, times 100.

    `per_item` is (N, len(keys)); the score for key k is 100 * sum(column k) / N.
    """
    n_items = per_item.shape[0]

    def score_totals(totals: np.ndarray) -> Totals:
        # totals: (D,) or (B, D) -> scores: floats or (B,) arrays
        scaled = 100.0 * np.asarray(totals, dtype=np.float64) / n_items
        return {
            key: (float(scaled[..., i]) if scaled.ndim == 1 else scaled[..., i])
            for i, key in enumerate(keys)
        }

    return SufficientStats(per_item=per_item, score_totals=score_totals, batched=True)


def aggregate_additive(metric: AdditiveMetric, items: Sequence[object]) -> Scores:
    """Score a corpus by summing its sufficient statistics, as sacrebleu does."""
    check_not_empty(items, metric.name)
    stats = metric.sufficient_stats(items)
    return {k: float(v) for k, v in stats.score_totals(stats.per_item.sum(0)).items()}
