"""Comparing evaluations of the same items: which metric a score belongs to, the paired
difference between two results, and a candidate against the best of several baselines.

Every comparison in tunelab goes through here: base vs fine-tuned (baselines, quickstart) and
before vs after training (retention). A score key (`acc`, `f1_macro`, `rougeL`, ...) belongs
to the first task metric that produces it (`scored_by`); the difference gets a paired
bootstrap over the items both results scored (1000 resamples, seed 0), giving its confidence
interval and the p-value that the second result is not better. Item by item (`item_scores`),
each item has its own score under the metric (0-100) and counts as right from the metric's
`right_at`; robustness's worst case and the error analysis between iterations read those. A
graded score (`Metric.continuous_items`: ROUGE, BLEU, ...) is right only from a line the user
sets (`ItemScores.judged`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.deferred import stats
from tunelab.core.errors import TunelabError
from tunelab.eval.metrics import Metric, delta_ci, delta_p_value, paired_deltas, task_metrics
from tunelab.eval.runner import EvalResult


def primary_key(task: TaskConfig, result: EvalResult) -> str:
    """The score compared between systems: eval.primary, else the result's first score."""
    return task.eval.primary or next(iter(result.scores))


def scored_by(task: TaskConfig, result: EvalResult, key: str) -> tuple[str, Metric]:
    """(name, metric) of the first task metric whose scores on `result` include `key`.

    Raises:
        TunelabError: if no task metric produces `key`, listing the result's scores.
    """
    for name, metric in task_metrics(task).items():
        if key in metric.aggregate(result.items[name]):
            return name, metric
    raise TunelabError(f"eval.primary '{key}': not a score of this task; scores are "
                       f"{', '.join(result.scores)}")


@dataclass
class PairedDifference:
    """Score `key` of result B minus result A on the same items."""

    key: str
    metric: str
    """The task metric that produces `key`."""
    before: float
    after: float
    ci: tuple[float, float]
    """95% paired-bootstrap interval of after - before."""
    p_value: float
    """p that B is not better than A (small: B is significantly better)."""
    lower_is_better: bool

    @property
    def delta(self) -> float:
        return self.after - self.before

    @property
    def significantly_better(self) -> bool:
        """Better after, with the 95% CI of the change excluding zero."""
        return self.ci[1] < 0 if self.lower_is_better else self.ci[0] > 0

    @property
    def relative_change(self) -> float:
        """The change in percent of the score before (negative: lower after)."""
        return 100.0 * self.delta / self.before if self.before else 0.0


def paired_difference(task: TaskConfig, before: EvalResult, after: EvalResult,
                      key: str) -> PairedDifference:
    """The change of `key` from `before` to `after` (same task, same items), with its paired
    bootstrap CI and p-value (both from one set of 1000 resamples, seed 0)."""
    name, metric = scored_by(task, after, key)
    # One set of resamples gives both the CI and the p-value; errors name the interval's
    # function, as retention's comparison always has.
    deltas = paired_deltas(before.items[name], after.items[name], metric, key,
                           caller="paired_delta_ci")
    lower = key in metric.lower_is_better
    return PairedDifference(key, name, before.scores[key], after.scores[key], delta_ci(deltas),
                            delta_p_value(deltas, lower), lower)


@dataclass
class Comparison:
    key: str
    best_baseline: str
    candidate: str
    gain: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def sentence(self) -> str:
        verdict = "significant" if self.significant else "NOT significant"
        return (f"{self.candidate} vs best baseline ({self.best_baseline}) on {self.key}: "
                f"{self.gain:+.2f} points, paired bootstrap p = {self.p_value:.4f} ({verdict} at 0.05)")


def compare_to_best(task: TaskConfig, baselines: Sequence[EvalResult], candidate: EvalResult,
                    key: str) -> Comparison:
    """The candidate against the best baseline on `key`, paired bootstrap on the same items."""
    _, metric = scored_by(task, candidate, key)
    lower = key in metric.lower_is_better
    best = (min if lower else max)(baselines, key=lambda r: r.scores[key])
    difference = paired_difference(task, best, candidate, key)
    return Comparison(key, best.system.label, candidate.system.label, difference.delta,
                      difference.p_value)


@dataclass
class ItemScores:
    """One score per item (0-100) of one result, and from which score an item is right."""

    key: str
    """The per-item score key (e.g. accuracy, rougeL)."""
    metric: str
    values: list[float]
    right_at: float | None
    """Threshold of a right item (None: the metric has no notion of right, e.g. perplexity)."""
    lower_is_better: bool
    continuous: bool = False
    """Whether an item's score is graded (ROUGE, BLEU, ...: `Metric.continuous_items`), so
    `right_at` is a default line rather than the metric's own notion of right."""

    def judged(self, pass_at: float | None) -> list[bool] | None:
        """Right or wrong per item as the user would call it: a graded score from the line the
        user set (`pass_at`; None when none was set: no line anyone chose), any other score
        from the metric's own notion of right (`pass_at` must then be None)."""
        if not self.continuous:
            return self.right()
        if pass_at is None:
            return None
        return ItemScores(self.key, self.metric, self.values, pass_at, self.lower_is_better,
                          True).right()

    def right(self) -> list[bool]:
        """Which items are right (score >= right_at, or <= for a lower-is-better score)."""
        if self.right_at is None:
            raise TunelabError(f"{self.key}: metric {self.metric} has no per-item right or "
                               "wrong; score the task with a label or overlap metric "
                               "(eval.primary) or pass a threshold")
        at = self.right_at
        return [v <= at if self.lower_is_better else v >= at for v in self.values]


def item_scores(task: TaskConfig, result: EvalResult, key: str | None = None,
                right_at: float | None = None) -> ItemScores:
    """Every item's own score under the metric producing `key` (default: the primary key).

    A key that is a mean of per-item scores is used as is; for another key of the same metric
    (f1_macro, mcc) its first per-item key (accuracy); a corpus-only metric (BLEU) gives each
    item's sentence-level score. `right_at` overrides the metric's threshold of a right item.
    """
    key = key or primary_key(task, result)
    name, metric = scored_by(task, result, key)
    item_key = key if key in metric.item_keys or not metric.item_keys else metric.item_keys[0]
    values = [float(metric.aggregate([item])[item_key]) for item in result.items[name]]
    return ItemScores(item_key, name, values, metric.right_at if right_at is None else right_at,
                      item_key in metric.lower_is_better, metric.continuous_items)


@dataclass(frozen=True)
class PairedValues:
    """Two systems' values on the same items (ratings, per-item scores): the mean change
    b - a with a seeded percentile bootstrap CI and the Wilcoxon signed-rank test."""

    n: int
    delta: float
    """mean(b - a) over the items both were rated on."""
    ci: tuple[float, float]
    bootstrap_p: float
    """One-sided: the share of resamples where b is not better."""
    wilcoxon_p: float
    """Two-sided Wilcoxon signed-rank (zero differences dropped); 1.0 when all are zero."""


def paired_values(a: Sequence[float], b: Sequence[float], resamples: int = 1000,
                   seed: int = 0) -> PairedValues:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = y - x
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    wilcoxon = 1.0 if not np.any(d) else float(stats.wilcoxon(x, y).pvalue)
    return PairedValues(len(d), float(d.mean()),
                         (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))),
                         float(np.mean(means <= 0)), wilcoxon)
