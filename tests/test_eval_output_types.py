"""Output types as objects (registry, allowed metrics, shots, checks), metrics that say what
they read and build themselves from the task, and `evaluate_records` on records that do not
come from the task's data source."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from eval_helpers import REVIEWS

from tunelab.config import OUTPUT_TYPES, EvalConfig, ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.datasets import load_task_data
from tunelab.eval.metrics import MetricInput, metric_class, task_metrics
from tunelab.eval.output_types import Framing, get_output_type, output_type_names
from tunelab.eval.runner import evaluate_loaded, evaluate_records
from tunelab.eval.tasks import check_task
from tunelab.models import load_model
from tunelab.runs import System


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))



def test_registry_names_match_the_config_and_unknown_names_fail_in_one_line() -> None:
    assert output_type_names() == list(OUTPUT_TYPES)
    assert [get_output_type(name).name for name in OUTPUT_TYPES] == list(OUTPUT_TYPES)
    with pytest.raises(TunelabError) as err:
        get_output_type("mc")
    assert str(err.value) == ("output_type: 'mc' is not an output type; use one of generate, "
                              "multiple_choice, loglikelihood_rolling, classification")


@pytest.mark.parametrize("output_type,wrong,expected", [
    ("generate", "multiple_choice", "'multiple_choice' does not apply to output_type generate; use "
     "accuracy, classification, exact_match, f1, rouge, bleu, chrf, perplexity"),
    ("multiple_choice", "bits_per_byte", "'bits_per_byte' does not apply to output_type "
     "multiple_choice; use multiple_choice, accuracy, classification, exact_match, f1, rouge, bleu, "
     "chrf"),
    ("loglikelihood_rolling", "accuracy", "'accuracy' does not apply to output_type "
     "loglikelihood_rolling; use perplexity, bits_per_byte, word_perplexity"),
    ("classification", "rouge", "'rouge' does not apply to output_type classification; use "
     "accuracy, classification, exact_match, f1"),
])
def test_each_output_type_rejects_a_metric_it_cannot_feed(output_type: str, wrong: str,
                                                          expected: str) -> None:
    task = TaskConfig(name="t", output_type=output_type,
                      eval=EvalConfig(metrics=[wrong], labels=["a", "b"]))
    with pytest.raises(TunelabError) as err:
        check_task(task)
    assert str(err.value) == f"task t: eval.metrics[0]: {expected}"
    # Every allowed metric passes the same check.
    for name in get_output_type(output_type).metrics:
        check_task(TaskConfig(name="t", output_type=output_type,
                              eval=EvalConfig(metrics=[name], labels=["a", "b"])))


def test_output_types_answer_what_callers_used_to_ask_by_name() -> None:
    kinds = {name: get_output_type(name) for name in OUTPUT_TYPES}
    assert {n for n, t in kinds.items() if t.takes_shots} == {"generate", "multiple_choice"}
    assert {n for n, t in kinds.items() if t.needs_head} == {"classification"}
    with pytest.raises(TunelabError, match="^--shots 2: output_type classification takes no"):
        kinds["classification"].check_shots(2)
    kinds["generate"].check_shots(2)


def test_metrics_build_from_the_task_and_say_what_they_read() -> None:
    task = TaskConfig(eval=EvalConfig(metrics=["classification", "perplexity", "rouge"],
                                      labels=["Positive", "negative"]))
    metrics = task_metrics(task)
    assert list(metrics) == ["classification", "perplexity", "rouge"]
    assert metrics["classification"].labels == ["positive", "negative"]  # type: ignore[attr-defined]
    assert [m.reads for m in metrics.values()] == [MetricInput.TEXT, MetricInput.NLL_TOKENS,
                                                   MetricInput.TEXT]
    assert metric_class("multiple_choice").reads is MetricInput.CHOICE_LOGPROBS
    no_labels = task_metrics(TaskConfig(eval=EvalConfig(metrics=["classification"])))
    assert no_labels["classification"].labels is None  # type: ignore[attr-defined]


def test_perplexity_alone_generates_nothing(lm) -> None:
    task = TaskConfig(name="ppl", data=REVIEWS, eval=EvalConfig(metrics=["perplexity"], bootstrap=0))
    result = evaluate_loaded(lm, task, System.base(), limit=3)
    assert [row["prediction"] for row in result.predictions] == ["", "", ""]
    assert result.scores["perplexity"] > 1


def mc_task() -> TaskConfig:
    return TaskConfig(name="reviews_mc", output_type="multiple_choice", data=REVIEWS,
                      choices=["positive", "negative"],
                      eval=EvalConfig(metrics=["multiple_choice", "classification"],
                                      labels=["positive", "negative"], bootstrap=100))


def test_evaluate_records_scores_the_split_as_evaluate_loaded_does(lm) -> None:
    task = mc_task()
    data = load_task_data(task)
    records, pool = data.split("test"), data.split("train")
    for shots in (0, 2):
        loaded = evaluate_loaded(lm, task, System.base(), shots=shots)
        direct = evaluate_records(lm, task, records, shots, pool, System.base(), Framing.of(task, data))
        assert direct.scores == loaded.scores and direct.ci == loaded.ci
        assert direct.items == loaded.items and direct.predictions == loaded.predictions
        assert (direct.n, direct.shots, direct.mean_context_tokens) == (
            loaded.n, loaded.shots, loaded.mean_context_tokens)


def test_evaluate_records_scores_a_transformed_copy_without_its_data_source(lm) -> None:
    task = mc_task()
    records = load_task_data(task).split("test")
    shouted = [dataclasses.replace(r, input=r.input.upper()) for r in records]
    gone = dataclasses.replace(task, data=dataclasses.replace(task.data, source="/no/such/file.jsonl"))
    result = evaluate_records(lm, gone, shouted, system=System.base())
    assert result.n == len(records)
    for row, record in zip(result.predictions, records, strict=True):
        assert row["input"] == record.input.upper()
        assert row["prompt"] == f"Review: {record.input.upper()}\nSentiment:"
    with pytest.raises(TunelabError, match="takes no in-context examples"):
        evaluate_records(lm, dataclasses.replace(task, output_type="loglikelihood_rolling"),
                         shouted, shots=1)
