"""Likely label errors in classification data, ranked by confident learning (cleanlab).

Confident learning needs out-of-sample class probabilities for every example: here from a
cross-validated classifier over the inputs (TF-IDF of words and word pairs, and on small data
character 2-5-grams too; logistic regression; scikit-learn, `model_for`), so no example is scored by a model that saw its own label. cleanlab's
`find_label_issues` keeps the examples whose given label the probabilities disagree with
beyond each class's own noise level, ranked by self-confidence (the probability of the given
label, lowest first)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.base import ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_union

from tunelab.data.checks.items import CheckItem, normalize

SMALL = 5000
"""Up to this many examples, the classifier also reads character n-grams (`model_for`)."""
MIN_PER_CLASS = 3
"""Fewer examples of some label and no cross-validation is possible: no ranking."""


@dataclass
class Suspect:
    origin: str
    input: str
    given: str
    suggested: str
    confidence: float
    """The cross-validated probability of the given label (low: likely wrong)."""

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__, input=self.input[:300])


@dataclass
class LabelErrors:
    method: str
    checked: int
    suspects: list[Suspect]
    """Every example cleanlab flags, most likely wrong first."""
    skipped: str = ""
    """Why no ranking was made (too few examples of a label, ...)."""
    accuracy: float | None = None
    """The classifier's cross-validated accuracy: how far to trust the ranking."""
    majority: float | None = None
    """The accuracy of always answering the most common label (chance level)."""

    def to_json(self, shown: int = 20) -> dict[str, object]:
        return {"method": self.method, "checked": self.checked, "flagged": len(self.suspects),
                "accuracy": self.accuracy, "majority": self.majority,
                "skipped": self.skipped, "top": [s.to_json() for s in self.suspects[:shown]]}


METHOD = "cleanlab find_label_issues on 5-fold cross-validated TF-IDF + logistic regression"


def rank_label_errors(items: Sequence[CheckItem], labels: Sequence[str], seed: int = 0
                      ) -> LabelErrors:
    """The items whose given label is likely wrong, most suspicious first."""
    index = {normalize(label): n for n, label in enumerate(labels)}
    kept = [i for i in items if normalize(i.output) in index and i.input.strip()]
    given = np.array([index[normalize(i.output)] for i in kept])
    counts = Counter(given.tolist())
    if len(counts) < 2 or min(counts.values()) < MIN_PER_CLASS:
        return LabelErrors(METHOD, len(kept), [], skipped=(
            f"needs at least {MIN_PER_CLASS} examples of at least two labels "
            f"(found {dict(Counter(labels[g] for g in given.tolist()))})"))
    folds = min(5, min(counts.values()))
    texts = [i.input for i in kept]
    features, classifier = model_for(len(kept), seed)
    matrix = features.fit_transform(texts)  # unsupervised: no label is used here
    probs = cross_val_predict(classifier, matrix, given,
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                              method="predict_proba")
    # columns follow the sorted classes present; map them back to label positions
    present = sorted(counts)
    full = np.zeros((len(kept), len(labels)))
    full[:, present] = probs
    flagged = _flag_present(given, full, present)
    suspects = [Suspect(kept[k].origin, kept[k].input, kept[k].output,
                        labels[int(full[k].argmax())], float(full[k, given[k]]))
                for k in flagged]
    accuracy = float((probs.argmax(axis=1) == np.searchsorted(present, given)).mean())
    majority = max(counts.values()) / len(kept)
    return LabelErrors(METHOD, len(kept), suspects, accuracy=accuracy, majority=majority)


def model_for(size: int, seed: int) -> tuple[TransformerMixin, ClassifierMixin]:
    """Features and classifier by data size: small data needs character n-grams (and
    logistic regression fits it in seconds); from SMALL rows on, words and word pairs with a
    stochastic-gradient logistic regression keep 100,000 rows within seconds."""
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    if size <= SMALL:
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                lowercase=False)
        return make_union(words, chars), LogisticRegression(max_iter=1000, C=10.0)
    return words, SGDClassifier(loss="log_loss", alpha=1e-5, max_iter=20, tol=None,
                                random_state=seed)


def _flag_present(given: np.ndarray, full: np.ndarray, present: list[int]) -> list[int]:
    """cleanlab over the labels that occur (a label of the set with no example drops out)."""
    remap = {label: n for n, label in enumerate(present)}
    local = np.array([remap[g] for g in given.tolist()])
    return list(find_label_issues(local, full[:, present],
                                  return_indices_ranked_by="self_confidence"))
