"""What generated text says (eval/harm.py) and where a task's harm rate shows up.

Each scorer is shown to flag a sentence that has its property and not one that lacks it; the
rates are checked against hand counts; an evaluation of a generate task records them in
metrics.json (a label / choice evaluation records none); `tunelab compare` counts offensive
and hurtful predictions as error categories.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import REVIEWS

from tunelab.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig
from tunelab.eval.harm import (
    HARM_SCORERS,
    HarmRates,
    Hurtful,
    Offensive,
    Sentiment,
    harm_flags,
    harm_rates,
)
from tunelab.eval.metrics import get_metric
from tunelab.eval.output_types import get_output_type
from tunelab.eval.runner import EvalResult, evaluate_loaded, read_result, write_result
from tunelab.eval.tables import results_table
from tunelab.models import load_model
from tunelab.report.markdown import write_report
from tunelab.runs import System
from tunelab.studies import retention
from tunelab.studies.error_analysis import compare_results
from tunelab.studies.error_categories import CATEGORIES, ItemView, TaskContext

OFFENSIVE_AND_HURTFUL = "you stupid idiot"  # profanity-check ~1.0; HurtLex: stupid, idiot
HURTFUL_ONLY = "he was arrested for kerb crawling"  # a multi-word lemma; profanity-check ~0.0
CLEAN = "The weather is mild today."


# ---- The scorers ---------------------------------------------------------------------------

def test_sentiment_is_positive_negative_or_neutral() -> None:
    positive, negative, neutral = Sentiment().values(
        ["I love this wonderful film", "I hate this awful film", "The table is brown."])
    assert positive > 0.5 and negative < -0.5 and neutral == 0.0
    assert [Sentiment().flagged(v) for v in (positive, negative, neutral)] == [False, True, False]
    assert Sentiment().values(["   "]) == [0.0]


def test_offensive_flags_abuse_and_not_a_clean_sentence() -> None:
    values = Offensive().values([OFFENSIVE_AND_HURTFUL, "shut up, you worthless piece of shit",
                                 CLEAN, "have a nice day"])
    assert values[0] > 0.9 and values[1] > 0.9
    assert values[2] < 0.1 and values[3] < 0.1
    assert Offensive().flags([OFFENSIVE_AND_HURTFUL, CLEAN]) == [True, False]
    assert Offensive().values([]) == []


def test_hurtful_finds_hurtlex_words_and_skips_the_prompts_own() -> None:
    hurtful = Hurtful()
    assert hurtful.words(OFFENSIVE_AND_HURTFUL) == ["stupid", "idiot"]
    assert hurtful.words(CLEAN) == [] and hurtful.values([CLEAN]) == [0.0]
    # a multi-word lemma whose words are not lemmas alone
    assert hurtful.words(HURTFUL_ONLY) == ["kerb crawling"]
    assert hurtful.words("kerb") == hurtful.words("crawling") == []
    # a group's term named as the prompt's own is not counted; other words still are
    group = "Black neighbours moved in next door"
    assert hurtful.flags([group]) == [True]
    assert hurtful.flags([group], ignore=["Black"]) == [False]
    assert hurtful.flags([group + ", the idiots"], ignore=["Black"]) == [True]


def test_harm_rates_are_the_hand_counted_shares() -> None:
    texts = [OFFENSIVE_AND_HURTFUL, HURTFUL_ONLY, CLEAN, "", "positive"]
    assert harm_flags(texts) == [["offensive", "hurtful"], ["hurtful"], [], [], []]
    assert harm_rates(texts) == {"offensive": 20.0, "hurtful": 40.0}  # 1/5, 2/5
    assert harm_rates([]) == {}
    rates = HarmRates.of(harm_flags(texts))
    assert rates == HarmRates({"offensive": 20.0, "hurtful": 40.0}, 5)
    assert rates.to_json() == {"offensive": 20.0, "hurtful": 40.0, "n": 5}
    assert HarmRates.from_json(json.loads(json.dumps(rates.to_json()))) == rates
    assert HarmRates.from_json(None) is None
    assert (HarmRates.header(), rates.cell()) == ("offensive / hurtful %", "20.0 / 40.0")
    assert [s.flag_name for s in HARM_SCORERS] == ["offensive", "hurtful"]


# ---- A task's evaluation -------------------------------------------------------------------

GENERATED = ["positive", OFFENSIVE_AND_HURTFUL, "negative", HURTFUL_ONLY, "positive", "negative",
             "the whore went home", "negative"]
"""What the fake generator writes for the 8 test items: offensive 2/8, hurtful 3/8."""


def _generate_task(metrics: tuple[str, ...] = ("classification",)) -> TaskConfig:
    return TaskConfig(name="reviews", data=REVIEWS, output_type="generate",
                      eval=EvalConfig(metrics=list(metrics), labels=["positive", "negative"],
                                      bootstrap=0,
                                      generation=GenerationConfig(max_new_tokens=3)))


@pytest.fixture()
def written_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model 'writes' GENERATED, in item order, so the rates can be counted by hand."""
    def fake(model, tokenizer, prompts, gen, desc="", hit_limit=None, results=None, kept=None):  # noqa: ANN001, ANN202
        assert len(prompts) == len(GENERATED)
        return list(GENERATED)

    monkeypatch.setattr("tunelab.eval.generation.generate", fake)  # what the output type calls


def test_an_evaluation_of_a_generate_task_records_its_harm_rates(
        tiny_llama: Path, tmp_path: Path, written_text: None) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    result = evaluate_loaded(lm, _generate_task(), System.base())
    assert [row["prediction"] for row in result.predictions] == GENERATED
    assert result.harm == HarmRates({"offensive": 25.0, "hurtful": 37.5}, 8)
    assert [row["harm"] for row in result.predictions][:4] == [
        [], ["offensive", "hurtful"], [], ["hurtful"]]

    write_result(result, tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["harm"] == {"offensive": 25.0, "hurtful": 37.5, "n": 8}
    back = read_result(tmp_path / "eval")
    assert back.harm == result.harm
    assert back.predictions[6]["harm"] == ["offensive", "hurtful"]
    # the retention cache keeps it too
    cached = json.loads(json.dumps(retention._to_json(result), default=str))
    assert retention._from_json(cached).harm == result.harm

    table = results_table([back], ["accuracy"])
    assert "offensive / hurtful %" in table.splitlines()[0]
    assert table.splitlines()[2].rstrip().endswith("25.0 / 37.5")


def test_label_and_choice_evaluations_record_no_harm(tiny_llama: Path, tmp_path: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    choice = TaskConfig(name="reviews_mc", output_type="multiple_choice", data=REVIEWS,
                        choices=["positive", "negative"],
                        eval=EvalConfig(metrics=["multiple_choice"], bootstrap=0))
    result = evaluate_loaded(lm, choice, System.base(), limit=3)
    assert result.harm is None and all("harm" not in row for row in result.predictions)
    write_result(result, tmp_path / "mc")
    assert json.loads((tmp_path / "mc" / "metrics.json").read_text())["harm"] is None
    assert read_result(tmp_path / "mc").harm is None
    assert "hurtful" not in results_table([result], ["acc"])
    # a generate task scored by perplexity alone writes no text: nothing to rate
    likelihood = evaluate_loaded(lm, _generate_task(("perplexity",)), System.base(), limit=3)
    assert likelihood.harm is None
    # the decision is the output type's own
    assert get_output_type("generate").writes_text(_generate_task())
    assert not get_output_type("classification").writes_text(_generate_task())
    assert not get_output_type("multiple_choice").writes_text(choice)


# ---- compare's error categories ------------------------------------------------------------

def _hand_built(system: System, predictions: list[str], references: list[str]) -> EvalResult:
    metric = get_metric("exact_match")
    items = [metric.item(p, r) for p, r in zip(predictions, references, strict=True)]
    rows = [{"index": i, "origin": f"qa.jsonl:{i + 1}", "input": f"question {i}",
             "prompt": f"question {i}", "prediction": p, "reference": r}
            for i, (p, r) in enumerate(zip(predictions, references, strict=True))]
    return EvalResult(task="qa", system=system, shots=0, n=len(rows),
                      scores=dict(metric.aggregate(items)), ci={},
                      signatures={"exact_match": metric.signature()}, mean_context_tokens=4.0,
                      predictions=rows, items={"exact_match": items})


def test_compare_counts_offensive_and_hurtful_predictions_for_a_and_b() -> None:
    task = TaskConfig(name="qa", data=REVIEWS, output_type="generate",
                      eval=EvalConfig(metrics=["exact_match"], bootstrap=0))
    references = ["a cat", "the sun", "an idiot", "a tree"]
    # A: right, wrong (offensive + hurtful), right (offensive + hurtful), right
    a = _hand_built(System.base(), ["a cat", OFFENSIVE_AND_HURTFUL, "an idiot", "a tree"],
                    references)
    # B: wrong (offensive + hurtful), right, wrong (offensive + hurtful), wrong (hurtful)
    b = _hand_built(System.tuned(), ["fuck this", "the sun", "the whore went home",
                                     HURTFUL_ONLY], references)
    report = compare_results(task, a, b)
    rows = {r.category: r for r in report.categories}
    assert (rows["offensive"].a_errors, rows["offensive"].a_all) == (1, 2)
    assert (rows["hurtful"].a_errors, rows["hurtful"].a_all) == (1, 2)
    assert (rows["offensive"].b_errors, rows["offensive"].b_all) == (2, 2)
    assert (rows["hurtful"].b_errors, rows["hurtful"].b_all) == (3, 3)
    assert "hurtful" in report.table() and "offensive" in report.short_table()


def test_harm_categories_fire_on_free_text_only() -> None:
    by_name = {c.name: c for c in CATEGORIES}
    open_text, chosen = TaskContext(free_text=True), TaskContext(free_text=False)
    for name, bad in (("offensive", OFFENSIVE_AND_HURTFUL), ("hurtful", HURTFUL_ONLY)):
        category = by_name[name]
        assert category.applies(open_text) and not category.applies(chosen)
        assert category.detect(ItemView(bad, "r", "x"), open_text)
        assert not category.detect(ItemView(CLEAN, "r", "x"), open_text)
    assert not by_name["offensive"].detect(ItemView(HURTFUL_ONLY, "r", "x"), open_text)


def test_the_report_shows_the_harm_column_and_says_what_it_counts(tmp_path: Path) -> None:
    references = ["a cat", "the sun"]
    rated = _hand_built(System.tuned(), [OFFENSIVE_AND_HURTFUL, "the sun"], references)
    rated.harm = HarmRates.of(harm_flags([OFFENSIVE_AND_HURTFUL, "the sun"]))
    write_report(tmp_path / "rated.md", "t", {}, [rated], ["exact_match"], None, 0.0)
    text = (tmp_path / "rated.md").read_text()
    assert "| offensive / hurtful % |" in text and "| 50.0 / 50.0" in text
    assert "offensive / hurtful %: percent of the outputs each scorer flags" in text
    chosen = _hand_built(System.base(), ["a cat", "the sun"], references)
    write_report(tmp_path / "chosen.md", "t", {}, [chosen], ["exact_match"], None, 0.0)
    assert "hurtful" not in (tmp_path / "chosen.md").read_text()
