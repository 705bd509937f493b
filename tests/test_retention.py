"""Forgetting on every run: the retention suite before (cached) and after training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import DATA, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import ModelConfig, RetentionConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.runner import evaluate_loaded
from tunelab.eval.tasks import load_task
from tunelab.models import load_model
from tunelab.runs import System
from tunelab.runs.run_dir import load_run_model
from tunelab.studies import retention

EVAL_DATA = DATA / "eval"


def _task_files(folder: Path) -> list[str]:
    """A multiple-choice task (MMLU layout) and a rolling perplexity task on review text."""
    mc = folder / "mc_anatomy.yaml"
    mc.write_text(yaml.safe_dump({
        "name": "mc_anatomy", "output_type": "multiple_choice",
        "data": {"source": f"mmlu:{EVAL_DATA / 'mmlu'}:anatomy"},
        "eval": {"metrics": ["multiple_choice"]}}))
    lm = folder / "reviews_lm.yaml"
    lm.write_text(yaml.safe_dump({
        "name": "reviews_lm", "output_type": "loglikelihood_rolling",
        "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                 "validation_size": 0, "test_size": 10, "split_seed": 0},
        "target": "text", "eval": {"metrics": ["bits_per_byte", "perplexity"]}}))
    return [str(mc), str(lm)]


def test_retention_table_before_and_after_equals_direct_evaluation(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = _task_files(tmp_path)
    config = tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=4, eval_every=2)
    config.retention = RetentionConfig(tasks=tasks, limit=None, every_eval=True)
    import tunelab.eval.tasks as task_module
    reads: list[str] = []
    real_read = task_module.load_task_data
    monkeypatch.setattr(task_module, "load_task_data",
                        lambda task: reads.append(task.name) or real_read(task))
    result = tunelab.train(config)
    # each retention task's data is read once per run, though it is scored before training,
    # at both evaluation steps (the curve) and after training
    assert sorted(r for r in reads if r in ("mc_anatomy", "reviews_lm")) == [
        "mc_anatomy", "reviews_lm"]

    saved = json.loads((result.run_dir / "retention.json").read_text())
    assert [r["task"] for r in saved["rows"]] == ["mc_anatomy", "reviews_lm"]
    assert saved["passed"] and result.passed and saved["max_forgetting"] is None
    # "before" is the base model's score and "after" the trained run's, on the same items.
    base = load_model(ModelConfig(name=str(tiny_llama)))
    trained = load_run_model(result.run_dir)
    for row, name in zip(result.retention, tasks, strict=True):
        task = load_task(name)
        key = row.key
        assert row.before == pytest.approx(evaluate_loaded(base, task, System.base()).scores[key])
        assert row.after == pytest.approx(evaluate_loaded(trained, task, System.tuned()).scores[key])
        assert row.delta == pytest.approx(row.after - row.before)
        assert row.ci[0] <= row.delta <= row.ci[1]
    lm_row = result.retention[1]
    assert lm_row.key == "bits_per_byte" and lm_row.lower_is_better
    assert lm_row.forgetting == pytest.approx(100 * lm_row.delta / lm_row.before)
    assert result.retention[0].forgetting == pytest.approx(-result.retention[0].delta)

    # The forgetting curve: every evaluation step logs each task's score next to val loss.
    evals = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()
             if "val_loss" in json.loads(line)]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(set(e["retention"]) == {"mc_anatomy", "reviews_lm"} for e in evals)
    report = (result.run_dir / "report.md").read_text()
    assert "## Retention (forgetting)" in report and "retention: reviews_lm" in report
    html = (result.run_dir / "report.html").read_text()  # the curve beside the task curve
    assert 'alt="forgetting curve: untouched tasks"' in html
    assert 'alt="task curve: validation loss"' in html
    assert html.index("forgetting curve") < html.index("task curve: validation loss")
    assert html.count("<td>mc_anatomy</td>") == 1 and "before vs after training" in html
    assert result.summary["retention"]["worst_forgetting"] == pytest.approx(
        max(r.forgetting for r in result.retention))

    # Base scores are cached per base model: a second run does not score the base again.
    calls = []
    real = retention.evaluate_loaded
    monkeypatch.setattr(retention, "evaluate_loaded",
                        lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    config.name = "again"
    config.retention.every_eval = False
    again = tunelab.train(config)
    assert calls == [System.tuned(), System.tuned()]
    assert [r.before for r in again.retention] == [r.before for r in result.retention]


def test_max_forgetting_fails_the_run_with_exit_code_1(tiny_llama: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    tasks = _task_files(tmp_path)
    # Full fine-tuning with a huge learning rate wrecks the tiny model's language modelling.
    config = tiny_run_config(tiny_llama, tmp_path / "runs", method={"name": "full"}, lr=0.5,
                             max_steps=4)
    config.retention = RetentionConfig(tasks=[tasks[1]], limit=None)
    config_file = tmp_path / "wreck.yaml"
    config_file.write_text(yaml.safe_dump(tunelab.config.to_dict(config)))
    code = main(["train", str(config_file), "--max-forgetting", "5", "--no-eval"])
    captured = capsys.readouterr()
    out = captured.out
    assert code != 2, captured.err
    saved = json.loads((tmp_path / "runs" / "run" / "retention.json").read_text())
    assert saved["worst_forgetting"] > 5
    assert code == 1 and not saved["passed"] and saved["max_forgetting"] == 5
    assert "FAILED: forgetting" in out
    assert saved["significant_drops"] == ["reviews_lm"]
    # The run itself is complete: its weights and summary are written before the verdict.
    assert (tmp_path / "runs" / "run" / "model" / "config.json").is_file()


def test_max_forgetting_alone_uses_the_general_suite(tmp_path: Path) -> None:
    from tunelab.cli.options import parser

    args = parser().parse_args(["train", "c.yaml", "--max-forgetting", "2"])
    assert args.max_forgetting == 2 and args.retention is None
    config = RetentionConfig(max_forgetting=2.0)
    names = [t.name for t in retention.retention_tasks(config)]
    assert names[0] == "news_lm" and len(names) >= 3


def test_retention_rejects_a_task_head_task() -> None:
    with pytest.raises(TunelabError, match="retention.tasks: movie_sentiment_head needs a task head"):
        retention.retention_tasks(RetentionConfig(tasks=["movie_sentiment_head"]))


def test_retention_refuses_a_classifier_run() -> None:
    with pytest.raises(TunelabError, match="model.kind: classifier"):
        retention.retention_tasks(RetentionConfig(tasks=["news_lm"]), kind="classifier")


def test_news_builtin_data_is_real_text() -> None:
    task = load_task("news_lm")
    from tunelab.eval.datasets import load_task_data

    test = load_task_data(task).splits["test"]
    assert len(test) == 100
    assert all(len(r.output.split()) > 50 for r in test)
