"""The metric registry, perplexity, and bootstrap confidence intervals / paired significance.

Usage:
    metric = get_metric("rouge", use_stemmer=True)
    items = [metric.item(pred, ref) for pred, ref in zip(predictions, references)]
    scores = metric.aggregate(items)          # {"rouge1": 41.2, ...}, 0-100 scale
    print(metric.signature())                 # settings that produced the numbers
    ci = bootstrap_ci(items, metric)          # {"rouge1": (39.8, 42.7), ...}

Registered metrics and their keys:
    rouge           rouge1, rouge2, rougeL, rougeLsum
    bleu            bleu, precision_1..4, bp, ratio
    chrf            chrf
    exact_match     exact_match
    f1              f1
    accuracy        accuracy
    classification  accuracy, precision/recall/f1 _macro and _micro, mcc, invalid_rate,
                    precision[L], recall[L], f1[L] for every label L
    perplexity      perplexity, nll_per_token (items are (sum_nll, n_tokens), not strings)
    multiple_choice, bits_per_byte, word_perplexity: see metrics_lm.py

`task_metrics(task)` builds a task's metrics from the task itself (`Metric.from_task`), and
every metric says what it reads (`Metric.reads`), so no caller asks for a metric by name.

Bootstrap resampling re-scores whole resampled corpora (Koehn 2004), so corpus metrics such
as BLEU are resampled correctly: each resample sums the items' sufficient statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import ClassVar

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.metrics_base import (
    AdditiveMetric,
    Metric,
    MetricInput,
    Scores,
    SufficientStats,
    Totals,
    aggregate_additive,
    check_not_empty,
)
from tunelab.eval.metrics_label import Accuracy, Classification, normalize_label
from tunelab.eval.metrics_lm import BitsPerByte, MultipleChoice, WordPerplexity
from tunelab.eval.metrics_text import Bleu, Chrf, ExactMatch, Rouge, TokenF1, squad_normalize

__all__ = [
    "Accuracy",
    "AdditiveMetric",
    "Bleu",
    "Chrf",
    "Classification",
    "ExactMatch",
    "Metric",
    "MetricInput",
    "Perplexity",
    "Rouge",
    "TokenF1",
    "bootstrap_ci",
    "delta_ci",
    "delta_p_value",
    "get_metric",
    "metric_class",
    "metric_names",
    "metric_option_names",
    "normalize_label",
    "paired_bootstrap",
    "paired_delta_ci",
    "paired_deltas",
    "perplexity_from_nll",
    "register_metric",
    "squad_normalize",
    "task_metrics",
]


def perplexity_from_nll(total_nll: float, total_tokens: int) -> float:
    """exp(total NLL / total tokens): corpus perplexity from summed natural-log NLL.

    Raises:
        TunelabError: if there are no tokens to average over.
    """
    if total_tokens <= 0:
        raise TunelabError(
            f"perplexity needs at least one scored token, got {total_tokens}; "
            "check that the evaluation data is not empty"
        )
    return math.exp(total_nll / total_tokens)


@dataclass
class Perplexity:
    """Token-level perplexity: exp(sum NLL / sum tokens), never a mean of per-item perplexities.

    Items are (sum_nll, n_tokens) pairs from a loglikelihood request, with NLL in nats.
    Keys: perplexity, nll_per_token (both lower is better).
    """

    name: ClassVar[str] = "perplexity"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"perplexity", "nll_per_token"})
    own_scale: ClassVar[frozenset[str]] = frozenset({"perplexity", "nll_per_token"})
    reads: ClassVar[MetricInput] = MetricInput.NLL_TOKENS
    item_keys: ClassVar[tuple[str, ...]] = ()
    right_at: ClassVar[float | None] = None
    continuous_items: ClassVar[bool] = True

    @classmethod
    def from_task(cls, task: TaskConfig) -> Perplexity:
        return cls()

    def item(self, sum_nll: float, n_tokens: int, /) -> tuple[float, float]:
        return float(sum_nll), float(n_tokens)

    def sufficient_stats(self, items: Sequence[tuple[float, float]]) -> SufficientStats:
        per_item = np.array(items, dtype=np.float64).reshape(len(items), 2)

        def score_totals(totals: np.ndarray) -> Totals:
            totals = np.asarray(totals, dtype=np.float64)  # (2,) or (B, 2)
            nll, tokens = totals[..., 0], totals[..., 1]
            if totals.ndim == 1:
                return {
                    "perplexity": perplexity_from_nll(float(nll), int(tokens)),
                    "nll_per_token": float(nll) / float(tokens),
                }
            per_token = nll / np.maximum(tokens, 1.0)
            return {"perplexity": np.exp(per_token), "nll_per_token": per_token}

        return SufficientStats(per_item=per_item, score_totals=score_totals, batched=True)

    def aggregate(self, items: Sequence[tuple[float, float]]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "perplexity|agg:exp(sum_nll/sum_tokens)|log:natural"


_REGISTRY: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Add a metric class (a dataclass following the Metric protocol) under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (Rouge, Bleu, Chrf, ExactMatch, TokenF1, Accuracy, Classification, Perplexity,
             MultipleChoice, BitsPerByte, WordPerplexity):
    register_metric(_cls)


def metric_names() -> list[str]:
    """The registered metric names, sorted."""
    return sorted(_REGISTRY)


def on_own_scale(key: str) -> bool:
    """Whether a score key is not a percentage (a metric's `own_scale`: MCC, perplexity,
    bits per byte, BLEU's bp and ratio)."""
    return any(key in cls.own_scale for cls in _REGISTRY.values())


def metric_class(name: str) -> type[Metric]:
    """The metric class registered as `name` (its `reads`, `from_task`, options).

    Raises:
        TunelabError: for an unknown metric name, listing the valid ones.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise TunelabError(
            f"unknown metric {name!r}; valid metrics are: {', '.join(metric_names())}"
        )
    return cls


def metric_option_names(name: str) -> list[str]:
    """The options (dataclass fields) the metric registered as `name` takes."""
    cls = metric_class(name)
    return [f.name for f in fields(cls) if f.init] if is_dataclass(cls) else []


def task_metrics(task: TaskConfig) -> dict[str, Metric]:
    """Every metric of the task (eval.metrics, in order), built from the task's own options."""
    return {name: metric_class(name).from_task(task) for name in task.eval.metrics}


def get_metric(name: str, **options: object) -> Metric:
    """Build the metric registered as `name` with `options` (its dataclass fields).

    Raises:
        TunelabError: for an unknown metric name or option, listing the valid ones.
    """
    cls = metric_class(name)
    valid = metric_option_names(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TunelabError(
            f"unknown option(s) {', '.join(unknown)} for metric {name!r}; "
            f"valid options are: {', '.join(valid) or '(none)'}"
        )
    return cls(**options)


# ---------------------------------------------------------------------------- bootstrap


def _resample_indices(n_items: int, n: int, seed: int) -> list[np.ndarray]:
    """Bootstrap resamples as chunks of index rows, each (chunk, n_items), seeded.

    Chunked so the (resamples x items) count matrix stays small for big corpora.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n, 4_000_000 // max(n_items, 1)))
    out = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        out.append(rng.integers(0, n_items, size=(size, n_items)))
    return out


def _resample_counts(index_rows: np.ndarray, n_items: int) -> np.ndarray:
    """How often each item appears in each resample: (chunk, n_items) indices -> counts."""
    n_rows = index_rows.shape[0]
    flat = (index_rows + n_items * np.arange(n_rows)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n_items).reshape(n_rows, n_items)


def _scores_from_stats(stats: SufficientStats, totals: np.ndarray) -> dict[str, np.ndarray]:
    """Score each row of totals (B, D) -> {key: (B,) array}."""
    if stats.batched:
        return {k: np.asarray(v, dtype=np.float64) for k, v in stats.score_totals(totals).items()}
    rows = [stats.score_totals(row) for row in totals]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}


def _bootstrap_scores(
    items: Sequence[object], metric: Metric, chunks: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """Scores of every resample, {key: (n,) array}.

    Additive metrics: counts (chunk, N) @ per-item statistics (N, D) -> totals (chunk, D).
    Other metrics: re-aggregate each resampled list of items.
    """
    parts: list[dict[str, np.ndarray]] = []
    if isinstance(metric, AdditiveMetric):
        stats = metric.sufficient_stats(items)
        for index_rows in chunks:
            totals = _resample_counts(index_rows, len(items)) @ stats.per_item
            parts.append(_scores_from_stats(stats, totals))
    else:
        for index_rows in chunks:
            rows = [metric.aggregate([items[i] for i in row]) for row in index_rows]
            parts.append({k: np.array([r[k] for r in rows]) for k in rows[0]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def bootstrap_ci(
    items: Sequence[object], metric: Metric, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals for every score key.

    Resamples items with replacement `n` times and re-aggregates each resample, so corpus
    metrics (BLEU, chrF) are resampled at the corpus level. Deterministic for a given seed.

    Returns:
        {key: (low, high)} at confidence level 1 - alpha.
    """
    check_not_empty(items, metric.name)
    _check_bootstrap_options(n, alpha)
    scores = _bootstrap_scores(items, metric, _resample_indices(len(items), n, seed))
    return {
        key: (
            float(np.quantile(values, alpha / 2)),
            float(np.quantile(values, 1 - alpha / 2)),
        )
        for key, values in scores.items()
    }


def paired_deltas(items_a: Sequence[object], items_b: Sequence[object], metric: Metric, key: str,
                  n: int = 1000, seed: int = 0, alpha: float = 0.05,
                  caller: str = "paired_deltas") -> np.ndarray:
    """score(B) - score(A) of `key` on n shared resamples of the items, checked.

    `paired_bootstrap` (p-value) and `paired_delta_ci` (interval) are functions of these
    deltas; with the same n and seed both see the same resamples.
    """
    if len(items_a) != len(items_b):
        raise TunelabError(
            f"{caller} got {len(items_a)} items for system A but {len(items_b)} for "
            "system B; score both systems on the same items"
        )
    check_not_empty(items_a, metric.name)
    _check_bootstrap_options(n, alpha)
    chunks = _resample_indices(len(items_a), n, seed)
    scores_a = _bootstrap_scores(items_a, metric, chunks)
    if key not in scores_a:
        raise TunelabError(
            f"key {key!r} is not a score of metric {metric.name!r}; "
            f"valid keys are: {', '.join(scores_a)}"
        )
    return _bootstrap_scores(items_b, metric, chunks)[key] - scores_a[key]


def paired_bootstrap(
    items_a: Sequence[object],
    items_b: Sequence[object],
    metric: Metric,
    key: str,
    n: int = 1000,
    seed: int = 0,
) -> float:
    """p-value that system B is *not* better than system A on score `key` (Koehn 2004).

    Both systems are scored on the same resampled item sets; p is the fraction of resamples
    where B does not beat A, with sacrebleu's add-one correction ((c + 1) / (n + 1)) so it is
    never exactly 0. "Better" means lower for keys in `metric.lower_is_better`.
    Small p (e.g. < 0.05): B is significantly better. Identical systems give p = 1.

    Raises:
        TunelabError: if the systems have different item counts or `key` is not a score.
    """
    delta = paired_deltas(items_a, items_b, metric, key, n, seed, 0.05, "paired_bootstrap")
    return delta_p_value(delta, key in metric.lower_is_better)


def paired_delta_ci(
    items_a: Sequence[object],
    items_b: Sequence[object],
    metric: Metric,
    key: str,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile CI of score(B) - score(A) on the same items (both resampled together).

    Used for before/after comparisons of one model (forgetting): the change of `key` with a
    confidence interval that accounts for the pairing of items.
    """
    delta = paired_deltas(items_a, items_b, metric, key, n, seed, alpha, "paired_delta_ci")
    return delta_ci(delta, alpha)


def delta_p_value(delta: np.ndarray, lower_is_better: bool) -> float:
    """p that B is not better than A, from resampled deltas score(B) - score(A): the fraction
    of resamples where B does not beat A, add-one corrected ((c + 1) / (n + 1))."""
    if lower_is_better:
        delta = -delta
    not_better = int(np.sum(delta <= 0))
    return (not_better + 1) / (len(delta) + 1)


def delta_ci(delta: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of resampled deltas at confidence level 1 - alpha."""
    return float(np.quantile(delta, alpha / 2)), float(np.quantile(delta, 1 - alpha / 2))


def _check_bootstrap_options(n: int, alpha: float) -> None:
    if n < 1:
        raise TunelabError(f"bootstrap option n={n} must be at least 1; 1000 is typical")
    if not 0 < alpha < 1:
        raise TunelabError(
            f"bootstrap option alpha={alpha} must be between 0 and 1; 0.05 is typical"
        )
