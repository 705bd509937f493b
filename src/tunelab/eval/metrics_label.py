"""Label metrics: accuracy, and a classification report with P/R/F1, MCC and invalid rate.

Predictions and labels are compared after `normalize_label` (strip whitespace and trailing
punctuation, lowercase), so "Positive." matches the label "positive". A prediction that is
not one of the labels is *invalid*: it is wrong, it counts as a false negative of the true
label, and it is no label's false positive (it sits in a separate "invalid" column of the
confusion matrix). Scores are on 0-100 except `mcc` (-1..1). Per-label keys use the
normalised label, e.g. `precision[positive]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.core.labels import normalize_label  # re-exported: the label metrics' comparison
from tunelab.eval.metrics_base import (
    MetricInput,
    Reference,
    Scores,
    SufficientStats,
    Totals,
    aggregate_additive,
    check_not_empty,
    mean_stats,
    reference_list,
)


@dataclass
class Accuracy:
    """Percent of items whose normalised prediction equals a normalised reference. Key: accuracy."""

    name: ClassVar[str] = "accuracy"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    right_at: ClassVar[float | None] = 100.0
    continuous_items: ClassVar[bool] = False
    item_keys: ClassVar[tuple[str, ...]] = ("accuracy",)

    @classmethod
    def from_task(cls, task: TaskConfig) -> Accuracy:
        return cls()

    def item(self, prediction: str, reference: Reference, /) -> float:
        pred = normalize_label(prediction)
        return float(any(pred == normalize_label(r) for r in reference_list(reference, self.name)))

    def sufficient_stats(self, items: Sequence[float]) -> SufficientStats:
        return mean_stats(np.array(items, dtype=np.float64).reshape(-1, 1), ("accuracy",))

    def aggregate(self, items: Sequence[float]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "accuracy|norm:strip-trailing-punct-lower|refs:any|agg:mean"


@dataclass
class Classification:
    """Accuracy, macro/micro precision/recall/F1, per-label P/R/F1, MCC and invalid rate.

    Matches scikit-learn's `precision_recall_fscore_support(labels=...)` (zero_division=0;
    macro F1 is the mean of per-label F1) and `matthews_corrcoef` with every invalid
    prediction mapped to one extra "invalid" class. The label set is `labels` if given,
    else the sorted set of (normalised) references.
    """

    labels: Sequence[str] | None = None
    name: ClassVar[str] = "classification"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset({"mcc"})
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    right_at: ClassVar[float | None] = 100.0
    continuous_items: ClassVar[bool] = False
    item_keys: ClassVar[tuple[str, ...]] = ("accuracy",)

    @classmethod
    def from_task(cls, task: TaskConfig) -> Classification:
        """The label set is the task's eval.labels (else the references seen)."""
        return cls(labels=task.eval.labels or None)

    def __post_init__(self) -> None:
        if self.labels is not None:
            normalised = [normalize_label(str(label)) for label in self.labels]
            if len(set(normalised)) != len(normalised) or "" in normalised:
                raise TunelabError(
                    f"option labels={list(self.labels)!r} has duplicates or empty labels after "
                    "normalisation (strip, drop trailing punctuation, lowercase); give distinct labels"
                )
            self.labels = normalised

    def item(self, prediction: str, reference: Reference, /) -> tuple[str, str]:
        """The (normalised prediction, normalised reference) pair."""
        refs = reference_list(reference, self.name)
        if len(refs) != 1:
            raise TunelabError(
                f"metric 'classification' got {len(refs)} references for one item; "
                "give exactly one reference label per prediction"
            )
        return normalize_label(prediction), normalize_label(refs[0])

    def label_set(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """The labels scored: the `labels` option, or the sorted distinct references."""
        if self.labels is not None:
            return list(self.labels)
        return sorted({ref for _, ref in items})

    def sufficient_stats(self, items: Sequence[tuple[str, str]]) -> SufficientStats:
        """One-hot confusion-matrix cells: row = true label, column = predicted label or invalid."""
        labels = self.label_set(items)
        index = {label: i for i, label in enumerate(labels)}
        n_labels = len(labels)
        unknown = sorted({ref for _, ref in items if ref not in index})
        if unknown:
            raise TunelabError(
                f"references {unknown[:5]!r} are not in option labels={labels!r}; "
                "add them to labels or fix the references"
            )
        per_item = np.zeros((len(items), n_labels * (n_labels + 1)), dtype=np.float64)
        for row, (pred, ref) in enumerate(items):
            col = index.get(pred, n_labels)  # n_labels = the invalid column
            per_item[row, index[ref] * (n_labels + 1) + col] = 1.0

        def score_totals(totals: np.ndarray) -> Totals:
            cells = np.asarray(totals)
            if cells.ndim == 1:
                return confusion_scores(cells.reshape(n_labels, n_labels + 1), labels)
            return confusion_score_rows(cells.reshape(-1, n_labels, n_labels + 1), labels)

        return SufficientStats(per_item=per_item, score_totals=score_totals, batched=True)

    def aggregate(self, items: Sequence[tuple[str, str]]) -> Scores:
        check_not_empty(items, self.name)
        return aggregate_additive(self, items)

    def signature(self) -> str:
        labels = "refs" if self.labels is None else ",".join(self.labels)
        return (
            f"classification|labels:{labels}|norm:strip-trailing-punct-lower"
            "|invalid:fn-only|zero_division:0"
        )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division that gives 0 where the denominator is 0 (sklearn zero_division=0)."""
    out = np.zeros_like(numerator, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def confusion_scores(confusion: np.ndarray, labels: Sequence[str]) -> Scores:
    """All classification scores from a (L, L+1) confusion matrix whose last column is invalid."""
    return {key: float(values[0]) for key, values in
            confusion_score_rows(confusion[None], labels).items()}


def confusion_score_rows(confusions: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """`confusion_scores` of each of B confusion matrices (B, L, L+1) at once: {key: (B,)}
    (a bootstrap's resamples scored without a Python loop)."""
    n_labels = len(labels)
    valid = confusions[:, :, :n_labels]
    n_items = confusions.sum(axis=(1, 2))  # (B,)
    true_positive = np.diagonal(valid, axis1=1, axis2=2)  # (B, L)
    predicted = valid.sum(axis=1)  # valid predictions per label
    actual = confusions.sum(axis=2)  # true items per label, including invalid predictions
    precision = _divide(true_positive, predicted)
    recall = _divide(true_positive, actual)
    f1 = _divide(2 * true_positive, predicted + actual)  # sklearn's formula, = 2PR/(P+R)
    tp_all, pred_all, true_all = true_positive.sum(axis=1), predicted.sum(axis=1), actual.sum(axis=1)
    scores: dict[str, np.ndarray] = {
        "accuracy": _divide(100.0 * tp_all, n_items),
        "precision_macro": 100.0 * precision.mean(axis=1),
        "recall_macro": 100.0 * recall.mean(axis=1),
        "f1_macro": 100.0 * f1.mean(axis=1),
        "precision_micro": _divide(100.0 * tp_all, pred_all),
        "recall_micro": _divide(100.0 * tp_all, true_all),
        "f1_micro": _divide(100.0 * 2 * tp_all, pred_all + true_all),
        "mcc": _mcc(confusions),
        "invalid_rate": _divide(100.0 * confusions[:, :, n_labels].sum(axis=1), n_items),
    }
    for i, label in enumerate(labels):
        scores[f"precision[{label}]"] = 100.0 * precision[:, i]
        scores[f"recall[{label}]"] = 100.0 * recall[:, i]
        scores[f"f1[{label}]"] = 100.0 * f1[:, i]
    return scores


def _mcc(confusions: np.ndarray) -> np.ndarray:
    """Multi-class Matthews correlation (Gorodkin's R_K) of each (L, L+1) confusion matrix,
    computed as sklearn does. The invalid column becomes a class with no true items (an
    all-zero row)."""
    t_sum = confusions.sum(axis=2)  # (B, L); the invalid class has no true items
    p_sum = confusions.sum(axis=1)  # (B, L+1)
    n_correct = np.trace(confusions[:, :, :confusions.shape[1]], axis1=1, axis2=2)
    n_samples = p_sum.sum(axis=1)
    cov_ytyp = n_correct * n_samples - np.einsum("bl,bl->b", t_sum, p_sum[:, :-1])
    cov_ypyp = n_samples**2 - np.einsum("bl,bl->b", p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.einsum("bl,bl->b", t_sum, t_sum)
    return _divide(cov_ytyp, np.sqrt(cov_ytyt * cov_ypyp))
