"""Text-overlap metrics: ROUGE (rouge-score), BLEU and chrF (sacrebleu), SQuAD EM and F1.

Each wraps the reference implementation rather than re-implementing it, so numbers match
what papers report: ROUGE is the mean of rouge-score's per-item F-measures; BLEU and chrF
sum sacrebleu's per-item sufficient statistics over the corpus before scoring (exactly
`sacrebleu.corpus_bleu` / `corpus_chrf`); EM and F1 follow the official SQuAD v1.1
evaluate script, taking the max over references. All scores are on a 0-100 scale.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import ClassVar, Generic, TypeVar

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from tunelab.config import TaskConfig
from tunelab.core.deferred import rouge_scorer
from tunelab.core.errors import TunelabError
from tunelab.eval.metrics_base import (
    MetricInput,
    Reference,
    Scores,
    SufficientStats,
    Totals,
    aggregate_additive,
    mean_stats,
    reference_list,
)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Rouge:
    """ROUGE-1/2/L/Lsum F-measure, the mean over items of rouge-score's per-item values.

    rougeLsum treats "\\n" as the sentence separator, as rouge-score does. Set
    `split_sentences` to first put a newline after every ".", "!" or "?" followed by
    whitespace (a simple regex, not nltk); it only changes rougeLsum. With several
    references, each ROUGE type takes the reference with the best F-measure
    (rouge-score's `score_multi`).
    """

    use_stemmer: bool = True
    split_sentences: bool = False
    name: ClassVar[str] = "rouge"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    item_keys: ClassVar[tuple[str, ...]] = ROUGE_TYPES
    right_at: ClassVar[float | None] = 50.0
    continuous_items: ClassVar[bool] = True
    _scorer: rouge_scorer.RougeScorer = field(init=False, repr=False, compare=False)

    @classmethod
    def from_task(cls, task: TaskConfig) -> Rouge:
        return cls()

    def __post_init__(self) -> None:
        self._scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=self.use_stemmer)

    def _prepare(self, text: str) -> str:
        return _SENTENCE_END.sub("\n", text) if self.split_sentences else text

    def item(self, prediction: str, reference: Reference, /) -> dict[str, float]:
        """Per-item F-measures in 0..1, keyed by ROUGE type."""
        refs = [self._prepare(r) for r in reference_list(reference, self.name)]
        pred = self._prepare(prediction)
        if len(refs) == 1:
            scores = self._scorer.score(refs[0], pred)
        else:
            scores = self._scorer.score_multi(refs, pred)
        return {key: scores[key].fmeasure for key in ROUGE_TYPES}

    def sufficient_stats(self, items: Sequence[dict[str, float]]) -> SufficientStats:
        per_item = np.array([[it[k] for k in ROUGE_TYPES] for it in items], dtype=np.float64)
        return mean_stats(per_item.reshape(len(items), len(ROUGE_TYPES)), ROUGE_TYPES)

    def aggregate(self, items: Sequence[dict[str, float]]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        stem = "yes" if self.use_stemmer else "no"
        sent = "regex" if self.split_sentences else "newline"
        return (
            f"rouge|stem:{stem}|tok:rouge-score-default|sent:{sent}|agg:mean-fmeasure"
            f"|refs:max-fmeasure|version:{version('rouge-score')}"
        )


SacrebleuT = TypeVar("SacrebleuT", BLEU, CHRF)


class _SacrebleuMetric(Generic[SacrebleuT]):
    """Shared plumbing for sacrebleu metrics: per-item statistics, summed, then scored.

    `_sb` is the sacrebleu metric object. Reference counts seen by `item()` are recorded so
    the signature reports `nrefs` the way sacrebleu does (a number, or "var").
    """

    name: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    item_keys: ClassVar[tuple[str, ...]] = ()
    right_at: ClassVar[float | None] = 50.0
    continuous_items: ClassVar[bool] = True
    _sb: SacrebleuT
    _nrefs_seen: set[int]

    @classmethod
    def from_task(cls, task: TaskConfig) -> _SacrebleuMetric[SacrebleuT]:
        return cls()

    def item(self, prediction: str, reference: Reference, /) -> list[int]:
        """sacrebleu's sufficient statistics for one segment (best over its references)."""
        refs = reference_list(reference, self.name)
        self._nrefs_seen.add(len(refs))
        # Same call sacrebleu's sentence_score makes: one hypothesis, refs as 1-line streams.
        return list(self._sb._extract_corpus_statistics([prediction], [[r] for r in refs])[0])

    def _scores(self, totals: list[int]) -> Scores:
        raise NotImplementedError

    def sufficient_stats(self, items: Sequence[list[int]]) -> SufficientStats:
        per_item = np.array(items, dtype=np.float64).reshape(len(items), -1)

        def score_totals(totals: np.ndarray) -> Totals:
            # Counts are integers; round-trip through int so scores are bit-identical
            # to sacrebleu's own integer sums.
            return self._scores([int(round(x)) for x in np.asarray(totals).tolist()])

        return SufficientStats(per_item=per_item, score_totals=score_totals)

    def aggregate(self, items: Sequence[list[int]]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        seen = self._nrefs_seen
        self._sb.num_refs = next(iter(seen)) if len(seen) == 1 else (-1 if seen else 1)
        return str(self._sb.get_signature())


@dataclass
class Bleu(_SacrebleuMetric[BLEU]):
    """Corpus BLEU, identical to `sacrebleu.corpus_bleu` with the same options.

    Keys: bleu and precision_1..N (0-100), bp (brevity penalty) and ratio (hyp/ref length)
    as factors, like sacrebleu prints them.
    """

    tokenize: str = "13a"
    lowercase: bool = False
    smooth_method: str = "exp"
    smooth_value: float | None = None
    max_ngram_order: int = 4
    effective_order: bool = False
    name: ClassVar[str] = "bleu"
    own_scale: ClassVar[frozenset[str]] = frozenset({"bp", "ratio"})

    def __post_init__(self) -> None:
        for option, valid in (
            ("tokenize", BLEU.TOKENIZERS),
            ("smooth_method", BLEU.SMOOTH_DEFAULTS),
        ):
            if getattr(self, option) not in valid:
                raise TunelabError(
                    f"bleu option {option}={getattr(self, option)!r} is not valid; "
                    f"choose one of: {', '.join(valid)}"
                )
        try:
            self._sb = BLEU(
                lowercase=self.lowercase,
                tokenize=self.tokenize,
                smooth_method=self.smooth_method,
                smooth_value=self.smooth_value,
                max_ngram_order=self.max_ngram_order,
                effective_order=self.effective_order,
            )
        except (AssertionError, ValueError, KeyError, RuntimeError, ImportError) as exc:
            # e.g. the ja-mecab tokenizer without its optional dependency installed
            raise TunelabError(
                f"cannot build metric 'bleu' with these options: {exc}; see sacrebleu's BLEU docs"
            ) from exc
        self._nrefs_seen = set()

    def _scores(self, totals: list[int]) -> Scores:
        bleu = self._sb._compute_score_from_stats(totals)
        scores = {"bleu": float(bleu.score)}
        for n, precision in enumerate(bleu.precisions, start=1):
            scores[f"precision_{n}"] = float(precision)
        scores["bp"] = float(bleu.bp)
        scores["ratio"] = float(bleu.sys_len / bleu.ref_len) if bleu.ref_len else 0.0
        return scores


@dataclass
class Chrf(_SacrebleuMetric[CHRF]):
    """Corpus chrF (chrF++ with word_order=2), identical to `sacrebleu.corpus_chrf`. Key: chrf."""

    char_order: int = 6
    word_order: int = 0
    beta: int = 2
    lowercase: bool = False
    whitespace: bool = False
    eps_smoothing: bool = False
    name: ClassVar[str] = "chrf"

    def __post_init__(self) -> None:
        try:
            self._sb = CHRF(
                char_order=self.char_order,
                word_order=self.word_order,
                beta=self.beta,
                lowercase=self.lowercase,
                whitespace=self.whitespace,
                eps_smoothing=self.eps_smoothing,
            )
        except (AssertionError, ValueError, RuntimeError) as exc:
            raise TunelabError(
                f"bad option for metric 'chrf': {exc}; see sacrebleu's CHRF options"
            ) from exc
        self._nrefs_seen = set()

    def _scores(self, totals: list[int]) -> Scores:
        return {"chrf": float(self._sb._compute_score_from_stats(totals).score)}


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lowercase, drop punctuation and a/an/the, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def squad_token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of normalised answers (0..1), as the SQuAD v1.1 script computes it."""
    pred_tokens = squad_normalize(prediction).split()
    ref_tokens = squad_normalize(reference).split()
    num_same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return (2 * precision * recall) / (precision + recall)


@dataclass
class ExactMatch:
    """SQuAD v1.1 exact match: 1 if the normalised prediction equals any normalised reference."""

    name: ClassVar[str] = "exact_match"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    right_at: ClassVar[float | None] = 100.0
    continuous_items: ClassVar[bool] = False
    item_keys: ClassVar[tuple[str, ...]] = ("exact_match",)

    @classmethod
    def from_task(cls, task: TaskConfig) -> ExactMatch:
        return cls()

    def item(self, prediction: str, reference: Reference, /) -> float:
        pred = squad_normalize(prediction)
        refs = reference_list(reference, self.name)
        return float(max(pred == squad_normalize(r) for r in refs))

    def sufficient_stats(self, items: Sequence[float]) -> SufficientStats:
        return mean_stats(np.array(items, dtype=np.float64).reshape(-1, 1), ("exact_match",))

    def aggregate(self, items: Sequence[float]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "exact_match|norm:squad-v1.1|refs:max|agg:mean"


@dataclass
class TokenF1:
    """SQuAD v1.1 token F1, the max over references, averaged over items. Key: f1."""

    name: ClassVar[str] = "f1"
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    own_scale: ClassVar[frozenset[str]] = frozenset()
    reads: ClassVar[MetricInput] = MetricInput.TEXT
    item_keys: ClassVar[tuple[str, ...]] = ("f1",)
    right_at: ClassVar[float | None] = 50.0
    continuous_items: ClassVar[bool] = True

    @classmethod
    def from_task(cls, task: TaskConfig) -> TokenF1:
        return cls()

    def item(self, prediction: str, reference: Reference, /) -> float:
        refs = reference_list(reference, self.name)
        return max(squad_token_f1(prediction, r) for r in refs)

    def sufficient_stats(self, items: Sequence[float]) -> SufficientStats:
        return mean_stats(np.array(items, dtype=np.float64).reshape(-1, 1), ("f1",))

    def aggregate(self, items: Sequence[float]) -> Scores:
        return aggregate_additive(self, items)

    def signature(self) -> str:
        return "f1|norm:squad-v1.1|tok:whitespace|refs:max|agg:mean"
