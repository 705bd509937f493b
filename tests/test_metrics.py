"""Metrics against reference implementations (rouge-score, sacrebleu, SQuAD v1.1, sklearn)
on real text, plus hand-worked golden values and bootstrap behaviour."""

from __future__ import annotations

import importlib.util
import math
import random
import re
import string
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF
from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

from tunelab.core.errors import TunelabError
from tunelab.eval import metrics as m
from tunelab.eval.metrics import (
    bootstrap_ci,
    get_metric,
    metric_names,
    paired_bootstrap,
    perplexity_from_nll,
)
from tunelab.eval.metrics_label import confusion_score_rows, confusion_scores

# ----------------------------------------------------------------------- real text pairs


def _gensim_data() -> Path:
    """gensim's test corpora: real text for the reference comparisons. gensim is a dev
    dependency, so a missing one fails these tests rather than skipping them."""
    spec = importlib.util.find_spec("gensim")
    assert spec is not None and spec.submodule_search_locations, (
        "gensim (a dev dependency) ships the text these metric tests use: pip install -e .[dev]")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def _perturb(sentence: str, rng: random.Random, other: str) -> str:
    """A prediction for `sentence`: dropped words, a local shuffle, a swap, or another sentence."""
    words = sentence.split()
    kind = rng.randrange(5)
    if kind == 0:
        return " ".join(w for w in words if rng.random() > 0.3)
    if kind == 1:
        i = rng.randrange(max(1, len(words) - 4))
        window = words[i : i + 5]
        rng.shuffle(window)
        return " ".join(words[:i] + window + words[i + 5 :])
    if kind == 2:
        return " ".join(words[: len(words) // 2] + other.split()[len(other.split()) // 2 :])
    if kind == 3:
        return other
    return sentence.lower()


@pytest.fixture(scope="module")
def text_pairs() -> tuple[list[str], list[str], list[str]]:
    """400 (prediction, reference, second reference) triples from gensim's news and reviews."""
    data = _gensim_data()
    lee = (data / "lee_background.cor").read_text(encoding="utf-8")
    news = [
        s
        for line in lee.splitlines()
        for s in re.split(r"(?<=[.!?])\s+", line)
        if len(s.split()) >= 4
    ][:200]
    reviews = [
        line.split(" ", 1)[1].strip()
        for line in (data / "pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines()
    ]
    sentences = news + reviews
    assert len(sentences) >= 400
    rng = random.Random(0)
    refs = sentences[:400]
    preds = [_perturb(s, rng, rng.choice(sentences)) for s in refs]
    refs2 = [_perturb(s, rng, rng.choice(sentences)) for s in refs]
    return preds, refs, refs2


def _run(name: str, preds: list, refs: list, **options):
    metric = get_metric(name, **options)
    items = [metric.item(p, r) for p, r in zip(preds, refs, strict=True)]
    return metric, items, metric.aggregate(items)


# ------------------------------------------------------------------------------ ROUGE


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_matches_rouge_score(text_pairs, use_stemmer):
    preds, refs, _ = text_pairs
    # Multi-sentence texts so rougeLsum's newline splitting is exercised.
    preds = preds + ["\n".join(preds[i : i + 3]) for i in range(0, 60, 3)]
    refs = refs + ["\n".join(refs[i : i + 3]) for i in range(0, 60, 3)]
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    expected = [scorer.score(r, p) for p, r in zip(preds, refs, strict=True)]

    metric, items, scores = _run("rouge", preds, refs, use_stemmer=use_stemmer)
    for key in types:
        assert [it[key] for it in items] == [e[key].fmeasure for e in expected]
        mean = 100 * float(np.mean([e[key].fmeasure for e in expected]))
        assert scores[key] == pytest.approx(mean, rel=1e-12, abs=1e-12)
    assert f"stem:{'yes' if use_stemmer else 'no'}" in metric.signature()


def test_rouge_multi_reference_matches_score_multi(text_pairs):
    preds, refs, refs2 = text_pairs
    multi = [[a, b] for a, b in zip(refs, refs2, strict=True)][:150]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    _, items, _ = _run("rouge", preds[:150], multi)
    for item, pred, refs_i in zip(items, preds, multi, strict=False):
        expected = scorer.score_multi(refs_i, pred)
        assert item == {k: v.fmeasure for k, v in expected.items()}


def test_rouge_split_sentences_only_changes_lsum():
    pred, ref = "The cat sat. The dog ran away!", "The dog ran away. The cat sat."
    plain = get_metric("rouge").item(pred, ref)
    split = get_metric("rouge", split_sentences=True).item(pred, ref)
    assert split["rouge1"] == plain["rouge1"] and split["rougeL"] == plain["rougeL"]
    assert split["rougeLsum"] == pytest.approx(1.0) and plain["rougeLsum"] < 1.0


# -------------------------------------------------------------------------- BLEU / chrF


def test_bleu_and_chrf_match_sacrebleu_exactly(text_pairs):
    preds, refs, _ = text_pairs
    metric, _, scores = _run("bleu", preds, refs)
    reference = sacrebleu.BLEU()
    expected = reference.corpus_score(preds, [refs])
    assert scores["bleu"] == sacrebleu.corpus_bleu(preds, [refs]).score > 0
    assert [scores[f"precision_{n}"] for n in range(1, 5)] == expected.precisions
    assert scores["bp"] == expected.bp
    assert metric.signature() == str(reference.get_signature())

    metric, _, scores = _run("chrf", preds, refs)
    assert scores["chrf"] == sacrebleu.corpus_chrf(preds, [refs]).score
    assert "nrefs:1" in metric.signature() and "nc:6" in metric.signature()


def test_bleu_chrf_options_and_multi_reference(text_pairs):
    preds, refs, refs2 = text_pairs
    multi = [[a, b] for a, b in zip(refs, refs2, strict=True)]
    metric, _, scores = _run("bleu", preds, multi)
    assert scores["bleu"] == sacrebleu.corpus_bleu(preds, [refs, refs2]).score
    assert "nrefs:2" in metric.signature()

    options = {"lowercase": True, "tokenize": "intl", "smooth_method": "floor"}
    metric, _, scores = _run("bleu", preds, refs, **options)
    reference = BLEU(**options)
    assert scores["bleu"] == reference.corpus_score(preds, [refs]).score
    assert metric.signature() == str(reference.get_signature())

    metric, _, scores = _run("chrf", preds, multi, word_order=2)
    assert scores["chrf"] == CHRF(word_order=2).corpus_score(preds, [refs, refs2]).score
    # Variable reference counts are reported as sacrebleu does.
    metric, _, _ = _run("bleu", preds[:2], [refs[0], [refs[1], refs2[1]]])
    assert "nrefs:var" in metric.signature()


# ------------------------------------------------------------------------- SQuAD EM/F1
# A faithful transcription of the official SQuAD v1.1 evaluate-v1.1.py functions.


def ref_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def ref_f1_score(prediction, ground_truth):
    prediction_tokens = ref_normalize_answer(prediction).split()
    ground_truth_tokens = ref_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def ref_exact_match_score(prediction, ground_truth):
    return ref_normalize_answer(prediction) == ref_normalize_answer(ground_truth)


def ref_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def test_squad_em_f1_match_official_script(text_pairs):
    preds, refs, refs2 = text_pairs
    rng = random.Random(1)
    # Short answer-like spans, some identical up to case/punctuation/articles.
    spans = [" ".join(s.split()[:3]) for s in refs]
    answers = [[s, " ".join(r.split()[:2])] for s, r in zip(spans, refs2, strict=True)]
    guesses = [
        rng.choice([f"the {s}!", s.upper(), " ".join(p.split()[:3]), f"An  {s.lower()}."])
        for s, p in zip(spans, preds, strict=True)
    ]
    total = len(guesses)
    em = f1 = 0.0
    for guess, truths in zip(guesses, answers, strict=True):
        em += ref_metric_max_over_ground_truths(ref_exact_match_score, guess, truths)
        f1 += ref_metric_max_over_ground_truths(ref_f1_score, guess, truths)
    _, em_items, em_scores = _run("exact_match", guesses, answers)
    _, f1_items, f1_scores = _run("f1", guesses, answers)
    assert em_scores["exact_match"] == pytest.approx(100.0 * em / total, rel=1e-12)
    assert f1_scores["f1"] == pytest.approx(100.0 * f1 / total, rel=1e-12)
    assert 0 < em_scores["exact_match"] < 100
    for guess, truths, em_item, f1_item in zip(guesses, answers, em_items, f1_items, strict=True):
        assert em_item == ref_metric_max_over_ground_truths(ref_exact_match_score, guess, truths)
        assert f1_item == ref_metric_max_over_ground_truths(ref_f1_score, guess, truths)


def test_squad_golden_values():
    em, f1 = get_metric("exact_match"), get_metric("f1")
    assert em.item("the Eiffel Tower", "Eiffel tower!") == 1.0
    assert em.aggregate([em.item("the Eiffel Tower", "Eiffel tower!")]) == {"exact_match": 100.0}
    # "paris france" vs "paris": P = 1/2, R = 1, F1 = 2/3.
    assert f1.item("Paris, France", "Paris") == pytest.approx(2 / 3)
    # Max over references: the second reference matches exactly.
    assert em.item("an apple", ["pear", "Apple."]) == 1.0
    assert f1.item("red apple", ["green pear", "apple"]) == pytest.approx(2 / 3)
    assert f1.aggregate([1.0, 0.0, 0.5]) == {"f1": pytest.approx(50.0)}


# ---------------------------------------------------------------------- classification


def test_classification_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = ["neg", "neu", "pos"]
    for trial in range(5):
        y_true = list(rng.choice(labels, size=200))
        pool = labels + (["maybe", "unsure"] if trial % 2 else [])
        y_pred = list(rng.choice(pool, size=200))
        metric, _, scores = _run("classification", y_pred, y_true, labels=labels)
        kw = {"labels": labels, "zero_division": 0}
        for avg in ("macro", "micro"):
            p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, **kw)
            assert scores[f"precision_{avg}"] == pytest.approx(100 * p)
            assert scores[f"recall_{avg}"] == pytest.approx(100 * r)
            assert scores[f"f1_{avg}"] == pytest.approx(100 * f)
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=None, **kw)
        for i, label in enumerate(labels):
            assert scores[f"precision[{label}]"] == pytest.approx(100 * p[i])
            assert scores[f"recall[{label}]"] == pytest.approx(100 * r[i])
            assert scores[f"f1[{label}]"] == pytest.approx(100 * f[i])
        invalid_mapped = [y if y in labels else "<invalid>" for y in y_pred]
        assert scores["mcc"] == pytest.approx(matthews_corrcoef(y_true, invalid_mapped))
        assert scores["accuracy"] == pytest.approx(100 * accuracy_score(y_true, y_pred))
        n_invalid = sum(y not in labels for y in y_pred)
        assert scores["invalid_rate"] == pytest.approx(100 * n_invalid / 200)


def test_classification_golden_and_invalid_handling():
    preds = ["Positive.", " negative", "maybe", "positive", "negative!"]
    refs = ["positive", "negative", "positive", "negative", "negative"]
    metric, _, s = _run("classification", preds, refs)
    # Labels from references: negative, positive. Confusion (rows true, cols neg/pos/invalid):
    #   negative: [2, 1, 0]   positive: [0, 1, 1]
    assert s["accuracy"] == pytest.approx(60.0)
    assert s["invalid_rate"] == pytest.approx(20.0)
    assert s["precision[positive]"] == pytest.approx(50.0)  # 1 TP / 2 predicted positive
    assert s["recall[positive]"] == pytest.approx(50.0)  # "maybe" is a false negative
    assert s["precision[negative]"] == pytest.approx(100.0)  # "maybe" is no false positive
    assert s["recall[negative]"] == pytest.approx(200 / 3)
    assert s["f1[negative]"] == pytest.approx(80.0)
    assert s["precision_micro"] == pytest.approx(75.0)  # 3 correct / 4 valid predictions
    assert s["recall_micro"] == pytest.approx(60.0)
    assert s["f1_macro"] == pytest.approx((80.0 + 50.0) / 2)
    # MCC by hand: t = [3, 2, 0], p = [2, 2, 1], correct 3, n 5:
    # (3*5 - 10) / sqrt((25 - 13) * (25 - 9)) = 5 / sqrt(192)
    assert s["mcc"] == pytest.approx(5 / math.sqrt(192))
    assert "labels:refs" in metric.signature()


def test_label_errors_and_accuracy():
    with pytest.raises(TunelabError, match="not in option labels"):
        _run("classification", ["a"], ["c"], labels=["a", "b"])
    with pytest.raises(TunelabError, match="duplicates"):
        get_metric("classification", labels=["Yes", "yes."])
    with pytest.raises(TunelabError, match="exactly one reference"):
        get_metric("classification").item("a", ["a", "b"])
    _, _, scores = _run("accuracy", ["Yes.", "no", "maybe"], ["yes", ["No", "nope"], "no"])
    assert scores == {"accuracy": pytest.approx(200 / 3)}


# ---------------------------------------------------------------------------- perplexity


def test_perplexity_is_token_weighted_not_mean_of_items():
    metric = get_metric("perplexity")
    items = [metric.item(2.0, 1), metric.item(4.0, 3)]
    scores = metric.aggregate(items)
    assert scores["perplexity"] == pytest.approx(math.exp(6.0 / 4.0))  # 4.48168907...
    assert scores["perplexity"] == pytest.approx(4.4816890703)
    assert scores["nll_per_token"] == pytest.approx(1.5)
    assert perplexity_from_nll(math.log(10) * 5, 5) == pytest.approx(10.0)
    with pytest.raises(TunelabError, match="at least one scored token"):
        perplexity_from_nll(1.0, 0)


# ----------------------------------------------------------------------------- registry


def test_get_metric_errors():
    assert {"rouge", "bleu", "chrf", "exact_match", "f1", "accuracy"} <= set(metric_names())
    with pytest.raises(TunelabError, match=r"unknown metric 'blue'.*bleu.*rouge"):
        get_metric("blue")
    with pytest.raises(TunelabError, match=r"unknown option\(s\) stemmer.*use_stemmer"):
        get_metric("rouge", stemmer=True)
    with pytest.raises(TunelabError, match=r"tokenize='bogus' is not valid; choose one of: .*13a"):
        get_metric("bleu", tokenize="bogus")
    with pytest.raises(TunelabError, match="no items"):
        get_metric("f1").aggregate([])


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_is_deterministic(text_pairs):
    preds, refs, _ = text_pairs
    for name in ("bleu", "rouge", "f1", "chrf"):
        metric, items, scores = _run(name, preds[:200], refs[:200])
        ci = bootstrap_ci(items, metric, n=300, seed=3)
        assert ci == bootstrap_ci(items, metric, n=300, seed=3)
        assert ci != bootstrap_ci(items, metric, n=300, seed=4)
        key = next(iter(scores))
        low, high = ci[key]
        assert low <= scores[key] <= high and low < high


def test_bootstrap_of_bleu_resamples_the_corpus():
    metric = get_metric("bleu")
    preds = ["the cat sat on the mat", "a dog", "it rained all day long", "hello world"]
    refs = ["the cat sat on a mat", "the dog barked", "it rained all day", "hello there world"]
    items = [metric.item(p, r) for p, r in zip(preds, refs, strict=True)]
    # With one resample of known indices, the score is corpus BLEU of that resample.
    rows = np.array([[0, 0, 2, 3]])
    stats = metric.sufficient_stats(items)  # type: ignore[attr-defined]
    totals = m._resample_counts(rows, 4) @ stats.per_item
    got = m._scores_from_stats(stats, totals)["bleu"][0]
    idx = rows[0]
    expected = sacrebleu.corpus_bleu([preds[i] for i in idx], [[refs[i] for i in idx]]).score
    assert got == expected


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    metric = get_metric("exact_match")
    a = [float(x) for x in rng.random(300) < 0.5]
    b = [1.0 if rng.random() < 0.5 else x for x in a]  # B fixes about half of A's misses
    assert paired_bootstrap(a, b, metric, "exact_match", n=500) < 0.01
    assert paired_bootstrap(a, a, metric, "exact_match", n=500) == 1.0
    assert paired_bootstrap(b, a, metric, "exact_match", n=500) > 0.9
    # Lower is better for perplexity: B with less NLL is better.
    ppl = get_metric("perplexity")
    worse = [(3.0 + x, 2) for x in rng.random(100)]
    better = [(nll - 1.0, n) for nll, n in worse]
    assert paired_bootstrap(worse, better, ppl, "perplexity", n=200) < 0.01
    with pytest.raises(TunelabError, match="valid keys are: exact_match"):
        paired_bootstrap(a, b, metric, "bleu")
    with pytest.raises(TunelabError, match="same items"):
        paired_bootstrap(a, b[:-1], metric, "exact_match")


def test_classification_scores_every_resample_at_once_as_one_by_one() -> None:
    """The bootstrap scores all resamples' confusion matrices in one array pass: each equals
    the matrix scored alone, bit for bit (invalid answers, empty rows and 2-5 labels), and
    matches sklearn."""
    rng = np.random.default_rng(0)
    for n_labels in (2, 3, 5):
        labels = [f"l{i}" for i in range(n_labels)]
        matrices = rng.integers(0, 9, size=(50, n_labels, n_labels + 1)).astype(np.float64)
        matrices[::7, :, n_labels] = 0  # no invalid answers
        matrices[::5, 0] = 0  # a label with no true items
        rows = confusion_score_rows(matrices, labels)
        for b, matrix in enumerate(matrices):
            alone = confusion_scores(matrix, labels)
            assert {k: float(v[b]) for k, v in rows.items()} == alone
        truth = [i for i in range(n_labels) for j in range(n_labels + 1)
                 for _ in range(int(matrices[1][i, j]))]
        guess = [j for i in range(n_labels) for j in range(n_labels + 1)
                 for _ in range(int(matrices[1][i, j]))]
        assert rows["mcc"][1] == pytest.approx(matthews_corrcoef(truth, guess))
        assert rows["accuracy"][1] == pytest.approx(100 * accuracy_score(truth, guess))
    items = [("positive", "positive"), ("negative", "positive"), ("maybe", "negative")] * 7
    metric = m.get_metric("classification", labels=["positive", "negative"])
    stats = metric.sufficient_stats(items)
    assert stats.batched
    counts = m._resample_counts(m._resample_indices(len(items), 300, 1)[0], len(items))
    totals = counts @ stats.per_item
    batched = stats.score_totals(totals)
    for b, row in enumerate(totals):
        assert {k: float(np.asarray(v)[b]) for k, v in batched.items()} == stats.score_totals(row)


def test_tables_show_percentages_with_two_decimals_and_other_scales_with_three() -> None:
    """Each metric names its keys that are not percentages (`own_scale`); a percentage near
    0 (an invalid rate of 0, an accuracy of 5) is not printed like an MCC."""
    from tunelab.eval.runner import EvalResult
    from tunelab.eval.tables import with_ci
    from tunelab.runs import System

    scores = {"accuracy": 5.0, "invalid_rate": 0.0, "mcc": 0.5224, "perplexity": 23.45678,
              "bits_per_byte": 1.23456, "bleu": 3.5, "bp": 0.91234}
    result = EvalResult(task="t", system=System.base(), shots=0, n=10, scores=scores,
                        ci={"accuracy": [1.0, 9.0], "mcc": [0.3071, 0.7294]}, signatures={},
                        mean_context_tokens=0.0)
    shown = {key: with_ci(result, key) for key in scores}
    assert shown == {"accuracy": "5.00 [1.0, 9.0]", "invalid_rate": "0.00", "mcc":
                     "0.522 [0.307, 0.729]", "perplexity": "23.457", "bits_per_byte": "1.235",
                     "bleu": "3.50", "bp": "0.912"}
    assert {key for key in scores if m.on_own_scale(key)} == {"mcc", "perplexity",
                                                              "bits_per_byte", "bp"}
