"""Every output type end to end on the tiny model, and the baselines-vs-fine-tuned comparison
from one command (table, JSON, per-example JSONL)."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from eval_helpers import EVAL_DATA, REVIEWS
from helpers import tiny_run_config

import tunelab
import tunelab.eval.output_types.base as output_types_base
from tunelab.cli import main
from tunelab.config import DataConfig, EvalConfig, GenerationConfig, ModelConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.output_types import get_output_type
from tunelab.eval.runner import evaluate_loaded
from tunelab.models import load_model
from tunelab.models.kinds import load_classifier
from tunelab.runs import System


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))


def mc_task(**changes) -> TaskConfig:
    task = TaskConfig(name="reviews_mc", output_type="multiple_choice", data=REVIEWS,
                      choices=["positive", "negative"],
                      eval=EvalConfig(metrics=["multiple_choice", "classification"],
                                      labels=["positive", "negative"], bootstrap=200))
    for key, value in changes.items():
        setattr(task, key, value)
    return task


def test_multiple_choice_predicts_the_likeliest_choice(lm) -> None:
    result = evaluate_loaded(lm, mc_task(), System.base(0))
    assert result.n == 8 and result.output_type == "multiple_choice"
    assert set(result.scores) >= {"acc", "acc_norm", "accuracy", "f1_macro"}
    for row in result.predictions:
        best = max(range(2), key=lambda j: row["logprobs"][j])
        assert row["prediction"] == row["choices"][best]
        assert row["items"]["multiple_choice"][0] == float(best in row["gold"])
    # acc (argmax choice == gold) and label accuracy of the chosen text agree here
    assert result.scores["acc"] == result.scores["accuracy"]
    assert result.ci["acc"][0] <= result.scores["acc"] <= result.ci["acc"][1]


def test_few_shot_reports_shot_tokens_and_drops_overflowing_shots(lm, monkeypatch) -> None:
    zero = evaluate_loaded(lm, mc_task(), System.base(0), shots=0)
    few = evaluate_loaded(lm, mc_task(), System.base(3), shots=3)
    assert zero.mean_shot_tokens == 0 and few.mean_shot_tokens > 0
    assert few.mean_context_tokens == pytest.approx(zero.mean_context_tokens + few.mean_shot_tokens, abs=1.0)
    monkeypatch.setattr(output_types_base, "context_limit", lambda lm: 100)
    with pytest.warns(UserWarning, match="dropped .* in-context examples"):
        cut = evaluate_loaded(lm, mc_task(), System.base(3), shots=3)
    assert cut.dropped_shots > 0 and cut.mean_context_tokens <= 100


def test_chat_template_multiple_choice(lm) -> None:
    chat = DataConfig(**{**REVIEWS.__dict__, "template": "chat", "instruction": "Sentiment?"})
    result = evaluate_loaded(lm, mc_task(data=chat), System.base(1), shots=1)
    assert result.n == 8 and "<|im_start|>assistant" in result.predictions[0]["prompt"]


def test_generate_with_perplexity_and_stop(lm) -> None:
    task = TaskConfig(name="reviews_gen", data=REVIEWS, eval=EvalConfig(
        metrics=["accuracy", "perplexity"], bootstrap=0,
        generation=GenerationConfig(max_new_tokens=4, batch_size=3, stop=["\n"])))
    result = evaluate_loaded(lm, task, System.base(2), shots=2, limit=5)
    assert result.n == 5 and "perplexity" in result.scores and result.mean_shot_tokens > 0
    assert all("\n" not in row["prediction"] for row in result.predictions)


def test_rolling_loglikelihood_task(lm) -> None:
    task = TaskConfig(name="reviews_lm", output_type="loglikelihood_rolling", data=REVIEWS,
                      target="text", eval=EvalConfig(metrics=["bits_per_byte", "perplexity",
                                                              "word_perplexity"], bootstrap=100))
    task.rolling.max_length = 6
    task.rolling.stride = 3
    result = evaluate_loaded(lm, task, System.base())
    rows = result.predictions
    nll, tokens = sum(r["nll"] for r in rows), sum(r["tokens"] for r in rows)
    assert result.scores["perplexity"] == pytest.approx(math.exp(nll / tokens))
    assert result.scores["bits_per_byte"] == pytest.approx(nll / sum(r["bytes"] for r in rows) / math.log(2))
    with pytest.raises(TunelabError, match="takes no in-context examples"):
        evaluate_loaded(lm, task, System.base(), shots=2)


def test_classification_head(tiny_llama: Path, lm) -> None:
    task = TaskConfig(name="reviews_head", output_type="classification", data=REVIEWS,
                      eval=EvalConfig(metrics=["classification"], labels=["positive", "negative"],
                                      bootstrap=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = load_classifier(ModelConfig(name=str(tiny_llama)), ["positive", "negative"])
    result = evaluate_loaded(head, task, System.base())
    assert result.n == 8 and {r["prediction"] for r in result.predictions} <= {"positive", "negative"}
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in result.predictions)
    with pytest.raises(TunelabError, match="needs a model with a classification head"):
        evaluate_loaded(lm, task, System.base())


def test_an_untrained_head_baseline_is_the_same_on_every_load(tiny_llama: Path) -> None:
    """The classification output type draws a fresh head from a fixed seed (so the base
    model's score is reproducible) without moving torch's own random state; training draws
    it from that state, which the run's seed sets."""
    task = TaskConfig(name="reviews_head", output_type="classification", data=REVIEWS,
                      eval=EvalConfig(metrics=["classification"], labels=["positive", "negative"]))
    output_type = get_output_type(task.output_type)

    def head(loaded) -> torch.Tensor:
        return next(p for n, p in loaded.model.named_parameters() if "score" in n).detach().clone()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(1)
        before = torch.get_rng_state()
        first = head(output_type.load_model(task, ModelConfig(name=str(tiny_llama))))
        assert torch.equal(torch.get_rng_state(), before)
        torch.manual_seed(2)
        second = head(output_type.load_model(task, ModelConfig(name=str(tiny_llama))))
        torch.manual_seed(1)
        unseeded = head(load_classifier(ModelConfig(name=str(tiny_llama)), ["positive", "negative"]))
        torch.manual_seed(2)
        other = head(load_classifier(ModelConfig(name=str(tiny_llama)), ["positive", "negative"]))
    assert torch.equal(first, second) and first.abs().sum() > 0
    assert not torch.equal(unseeded, other)


def test_builtin_task_files_on_fixture_data(lm, tmp_path: Path) -> None:
    task = tmp_path / "mmlu.yaml"
    task.write_text(yaml.safe_dump({
        "output_type": "multiple_choice", "data": {"source": f"mmlu:{EVAL_DATA / 'mmlu'}:anatomy"},
        "eval": {"metrics": ["multiple_choice"], "bootstrap": 0}}))
    result = evaluate_loaded(lm, tunelab.eval.tasks.load_task(str(task)), System.base(), shots=1)
    assert result.n == 3
    prompt = result.predictions[0]["prompt"]
    assert prompt.startswith("The following are multiple choice questions (with answers) about anatomy.")
    assert prompt.endswith("D. The second and third pharyngeal arches\nAnswer:")


def test_one_command_compares_baselines_with_the_fine_tune(tiny_llama: Path, tmp_path: Path,
                                                           capsys) -> None:
    run = tunelab.train(tiny_run_config(tiny_llama, tmp_path / "runs", name="ft", max_steps=2,
                                        eval_every=0), evaluate_after=False)
    task = tmp_path / "reviews_mc.yaml"
    task.write_text(yaml.safe_dump({
        "name": "reviews_mc", "output_type": "multiple_choice",
        "data": {k: v for k, v in dataclasses.asdict(REVIEWS).items() if v is not None},
        "choices": ["positive", "negative"], "fewshot": {"k": 2},
        "eval": {"metrics": ["multiple_choice"], "bootstrap": 200}}))
    out = tmp_path / "cmp"
    capsys.readouterr()
    argv = ["eval", "--adapter", str(run.run_dir), "--task", str(task), "--baselines", "zero,few",
            "--limit", "6"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    systems = [s["system"] for s in report["systems"]]
    assert systems == ["base 0-shot", "base 2-shot", "fine-tuned (ft)"]
    assert report["key"] == "acc" and 0 < report["comparison"]["p_value"] <= 1
    assert report["comparison"]["candidate"] == "fine-tuned (ft)"
    assert all(s["n"] == 6 for s in report["systems"])
    for folder in ("base-0-shot", "base-2-shot", "fine-tuned--ft"):
        rows = (out / folder / "predictions.jsonl").read_text().splitlines()
        assert len(rows) == 6 and "logprobs" in json.loads(rows[0])
    assert json.loads((out / "comparison.json").read_text())["key"] == "acc"
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "acc [95% CI]" in table and "shot tokens" in table and "vs best baseline" in table


def test_suite_runs_every_task_in_one_table(tiny_llama: Path, tmp_path: Path, monkeypatch,
                                            capsys) -> None:
    import tunelab.eval.tasks as tasks_module

    (tmp_path / "mini.yaml").write_text(yaml.safe_dump({
        "name": "mini", "description": "two built-in tasks",
        "tasks": ["movie_sentiment_mc", "movie_reviews_lm"]}))
    monkeypatch.setattr(tasks_module, "SUITE_DIR", tmp_path)
    assert main(["eval", "--task", "mini", "--model", str(tiny_llama), "--limit", "2"]) == 0
    table = capsys.readouterr().out
    assert "movie_sentiment_mc" in table and "movie_reviews_lm" in table
    assert "acc" in table and "bits_per_byte" in table


def test_eval_reads_and_checks_a_task_once(tiny_llama: Path, monkeypatch) -> None:
    """`tunelab eval`: the task's options are checked once and its data read once (eval/tasks.py:
    read_task); the runner scores what was read."""
    import tunelab.api as api
    import tunelab.eval.runner as runner
    import tunelab.eval.tasks as tasks

    calls: dict[str, int] = {}

    def count(module, name: str) -> None:
        real = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)

    count(tasks, "load_task_data")
    count(tasks, "check_task")
    count(runner, "check_task")
    result = api.evaluate_task(mc_task(), model=str(tiny_llama), limit=3)
    assert result.n == 3
    assert calls == {"load_task_data": 1, "check_task": 1}


def test_baselines_read_the_task_once(tiny_llama: Path, monkeypatch) -> None:
    """`tunelab eval --baselines zero,few`: the task's data is read once for every system (and
    its few-shot pool checked for the most shots asked), not once per system."""
    import tunelab.api as api
    import tunelab.eval.tasks as tasks

    calls = []
    real = tasks.load_task_data
    monkeypatch.setattr(tasks, "load_task_data", lambda task: calls.append(task.name) or real(task))
    report = api.compare_baselines(mc_task(), model=str(tiny_llama), baselines=["zero", "few"],
                                   shots=2, limit=3)
    assert [r.system for r in report.results] == [System.base(0), System.base(2)]
    assert all(r.n == 3 for r in report.results)
    assert calls == ["reviews_mc"]
