"""One comparison module: the key-to-metric lookup, the paired difference of two results (the
same numbers as the paired bootstrap functions), and `eval.primary` naming a score of the
task's *second* metric in the baselines, retention and quickstart comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DATA

from tunelab.config import DataConfig, EvalConfig, ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.compare import compare_to_best, paired_difference, primary_key, scored_by
from tunelab.eval.metrics import get_metric, paired_bootstrap, paired_delta_ci
from tunelab.eval.runner import evaluate_loaded
from tunelab.models import load_model
from tunelab.runs import System
from tunelab.studies import retention

REVIEWS = DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                     template="format", prompt_format="Review: {input}\nSentiment:",
                     completion_format=" {output}", test_size=8, validation_size=0)


def second_metric_task() -> TaskConfig:
    """multiple_choice first (acc, acc_norm), classification second; compared on f1_macro."""
    return TaskConfig(name="reviews_mc", output_type="multiple_choice", data=REVIEWS,
                      choices=["positive", "negative"],
                      eval=EvalConfig(metrics=["multiple_choice", "classification"],
                                      labels=["positive", "negative"], bootstrap=50,
                                      primary="f1_macro"))


@pytest.fixture(scope="module")
def results(tiny_llama: Path):
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    task = second_metric_task()
    return task, evaluate_loaded(lm, task, System.base(0)), evaluate_loaded(lm, task, System.base(3),
                                                                           shots=3)


def test_a_score_key_belongs_to_the_first_metric_producing_it(results) -> None:
    task, zero, _ = results
    assert scored_by(task, zero, "acc")[0] == "multiple_choice"
    assert scored_by(task, zero, "f1_macro")[0] == "classification"
    assert scored_by(task, zero, "f1[negative]")[0] == "classification"
    assert primary_key(task, zero) == "f1_macro"
    with pytest.raises(TunelabError, match="^eval.primary 'rouge1': not a score of this task; "
                                           "scores are acc, acc_norm, accuracy"):
        scored_by(task, zero, "rouge1")


def test_paired_difference_is_the_paired_bootstrap_of_the_right_metric(results) -> None:
    task, zero, few = results
    change = paired_difference(task, zero, few, "f1_macro")
    metric = get_metric("classification", labels=["positive", "negative"])
    items_a, items_b = zero.items["classification"], few.items["classification"]
    assert change.metric == "classification" and not change.lower_is_better
    assert change.delta == few.scores["f1_macro"] - zero.scores["f1_macro"]
    assert change.ci == paired_delta_ci(items_a, items_b, metric, "f1_macro")
    assert change.p_value == paired_bootstrap(items_a, items_b, metric, "f1_macro")


def test_baseline_comparison_on_the_second_metric(results) -> None:
    task, zero, few = results
    comparison = compare_to_best(task, [zero], few, "f1_macro")
    metric = get_metric("classification", labels=["positive", "negative"])
    assert comparison.key == "f1_macro" and comparison.best_baseline == "base 0-shot"
    assert comparison.gain == few.scores["f1_macro"] - zero.scores["f1_macro"]
    assert comparison.p_value == paired_bootstrap(zero.items["classification"],
                                                  few.items["classification"], metric, "f1_macro")


def test_retention_compares_the_second_metric(results) -> None:
    task, before, after = results
    [row] = retention.compare({task.name: before}, {task.name: after}, [task])
    metric = get_metric("classification", labels=["positive", "negative"])
    assert row.key == "f1_macro" and (row.before, row.after) == (
        before.scores["f1_macro"], after.scores["f1_macro"])
    assert row.ci == paired_delta_ci(before.items["classification"], after.items["classification"],
                                     metric, "f1_macro")


def test_quickstart_compares_the_second_metric(tiny_llama: Path, tmp_path: Path) -> None:
    from tunelab.workflows.quickstart import run_quickstart

    lines: list[str] = []
    run_dir = run_quickstart(
        tmp_path, limit=4, echo=lines.append,
        overrides=[f"model.name={tiny_llama}", "train.max_steps=2", "train.eval_every=0",
                   "eval.shots=1", "eval.generation.max_new_tokens=2",
                   "eval.metrics=[accuracy, classification]", "eval.primary=f1_macro"])
    comparison = json.loads((run_dir / "comparison.json").read_text())
    assert comparison["key"] == "f1_macro" and 0 < comparison["p_value"] <= 1
    assert any("vs best baseline" in line and "on f1_macro" in line for line in lines)
    # it ends with the error analysis of base 0-shot vs the fine-tune, in the report too
    headline = next(line for line in lines if line.startswith("base 0-shot -> fine-tuned"))
    assert "(4 items" in headline and "exact McNemar p=" in headline
    report = (run_dir / "report.md").read_text()
    assert "## Error analysis: base 0-shot vs fine-tuned (tunelab compare)" in report
    assert "still wrong" in report
