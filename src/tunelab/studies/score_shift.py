"""How graded per-item scores moved between two evaluations of the same items: `tunelab
compare` on ROUGE, BLEU, chrF, token F1 (`Metric.continuous_items`), where no line of right
was chosen.

    paired items -> per item the difference B - A of its score -> improved / worsened /
    unchanged counts, the mean difference with a paired bootstrap 95% CI (1000 resamples of
    the items, seed 0) and the two-sided Wilcoxon signed-rank test (zero differences dropped;
    p = 1 when every difference is zero) -> the most improved and most worsened items ->
    B's worst items (its lowest scores), the ones `--export` writes for the next iteration.

"Improved" follows the score's direction: a lower perplexity is an improvement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tunelab.core.errors import TunelabError
from tunelab.eval.compare import paired_values

UNCHANGED = 1e-9
"""Differences smaller than this (in score points) are no change (float noise)."""


@dataclass
class ScoreShift:
    """Per-item scores of A and B on the same items, compared pair by pair."""

    n: int
    a_mean: float
    b_mean: float
    mean_difference: float
    """mean(B - A) over the items, in the score's points."""
    ci: tuple[float, float]
    """Paired bootstrap 95% interval of the mean difference."""
    wilcoxon_p: float
    """Two-sided Wilcoxon signed-rank p of the differences (1.0 when all are zero)."""
    improved: int
    worsened: int
    unchanged: int


def score_shift(a: Sequence[float], b: Sequence[float], lower_is_better: bool = False
                ) -> ScoreShift:
    """The paired comparison of per-item scores `a` and `b` (same items, same order)."""
    if len(a) != len(b) or not a:
        raise TunelabError(f"compare: {len(a)} scores for A but {len(b)} for B; compare two "
                           "evaluations of the same items")
    paired = paired_values(a, b)  # the seeded paired bootstrap and Wilcoxon
    gains = [gain(x, y, lower_is_better) for x, y in zip(a, b, strict=True)]
    improved = sum(g > UNCHANGED for g in gains)
    worsened = sum(g < -UNCHANGED for g in gains)
    return ScoreShift(len(a), sum(a) / len(a), sum(b) / len(b), paired.delta, paired.ci,
                      paired.wilcoxon_p, improved, worsened, len(a) - improved - worsened)


def gain(a: float, b: float, lower_is_better: bool) -> float:
    """How much better B's score is than A's (positive: improved)."""
    return a - b if lower_is_better else b - a


def change(item_gain: float) -> str:
    """improved, worsened or unchanged, from an item's gain."""
    return "improved" if item_gain > UNCHANGED else "worsened" if item_gain < -UNCHANGED \
        else "unchanged"


class Shifted(Protocol):
    """A paired item with a graded score on both sides (error_analysis.PairedItem)."""

    @property
    def gain(self) -> float: ...

    @property
    def b_badness(self) -> float: ...


ItemT = TypeVar("ItemT", bound=Shifted)


def most_improved(items: Sequence[ItemT], count: int) -> list[ItemT]:
    """The `count` items B improved most on, most first (ties in item order)."""
    return sorted((i for i in items if i.gain > UNCHANGED), key=lambda i: -i.gain)[:count]


def most_worsened(items: Sequence[ItemT], count: int) -> list[ItemT]:
    """The `count` items B worsened most on, most first (ties in item order)."""
    return sorted((i for i in items if i.gain < -UNCHANGED), key=lambda i: i.gain)[:count]


def worst_items(items: Sequence[ItemT], count: int | None) -> list[ItemT]:
    """B's `count` worst items (lowest score; highest for lower-is-better), worst first;
    default: the worst quarter (at least one)."""
    chosen = default_export_count(len(items)) if count is None else count
    return sorted(items, key=lambda i: -i.b_badness)[:chosen]


def default_export_count(n: int) -> int:
    """The worst quarter of `n` items, at least one."""
    return max(1, math.ceil(n / 4)) if n else 0
