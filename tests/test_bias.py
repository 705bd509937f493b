"""`tunelab bias` and the `bias:` block on the tiny test model: counterfactual probes whose
numbers are recomputed from independent evaluations of the rewritten items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import DATA, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import (
    BiasConfig,
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    TaskConfig,
)
from tunelab.data.transforms.counterfactual import counterfactual_record, parse_probes
from tunelab.eval.datasets import load_task_data
from tunelab.eval.datasets.bbq import bbq_items, bbq_scores, bbq_task
from tunelab.eval.output_types import Framing, input_text
from tunelab.eval.runner import evaluate_records
from tunelab.models import load_model
from tunelab.runs import System
from tunelab.studies.bias import run_bias

LABELS = ["positive", "negative"]
PEOPLE = DataConfig(source=str(DATA / "people.jsonl"), fields={"input": "text", "output": "label"},
                    template="format", prompt_format="Review: {input}\nSentiment:",
                    completion_format=" {output}", test_size=12, validation_size=0)


def _task() -> TaskConfig:
    return TaskConfig(name="people", data=PEOPLE, output_type="generate",
                      eval=EvalConfig(metrics=["classification"], labels=LABELS,
                                      generation=GenerationConfig(max_new_tokens=3)))


def test_probe_rows_are_the_evaluations_of_each_groups_rewritten_items(
        tiny_llama: Path, tmp_path: Path) -> None:
    task = _task()
    probes = parse_probes("gender,names_gender")
    report = run_bias(task, probes, model=str(tiny_llama), baselines=["zero"],
                      out_dir=tmp_path / "bias")
    data = load_task_data(task)
    records = data.split("test")
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    assert [r.probe for r in report.rows] == ["gender", "names_gender"]
    for row, probe in zip(report.rows, probes, strict=True):
        mentioning = [r for r in records if probe.mentions(input_text(r))]
        assert row.n == len(mentioning) > 0
        results = {}
        for group in probe.groups:
            rewritten = [counterfactual_record(r, probe, group) for r in mentioning]
            assert all(r.output == m.output for r, m in zip(rewritten, mentioning, strict=True))
            results[group] = evaluate_records(lm, task, rewritten, 0, (), System.base(),
                                              Framing.of(task, data))
        first = results[probe.groups[0]]
        for gap in row.groups:
            assert gap.score == pytest.approx(results[gap.group].scores[row.key])
            assert gap.gap == pytest.approx(gap.score - first.scores[row.key])
            assert gap.gap_ci[0] <= gap.gap <= gap.gap_ci[1]
        flips = [len({results[g].predictions[i]["prediction"].strip().lower()
                      for g in probe.groups}) > 1 for i in range(row.n)]
        assert row.flip_rate == pytest.approx(100 * sum(flips) / row.n)
        # the variants really differ: the female variant of a "he" item says "she"
        variants = [counterfactual_record(r, probe, g) for r in mentioning[:1] for g in probe.groups]
        assert len({input_text(v) for v in variants}) == len(probe.groups)
    saved = json.loads((tmp_path / "bias" / "bias.json").read_text())
    assert [p["probe"] for p in saved["probes"]] == ["gender", "names_gender"]
    assert (tmp_path / "bias" / "base-0-shot" / "gender").is_dir()


def test_bias_block_before_and_after_training_and_cli_errors(
        tiny_llama: Path, tmp_path: Path, capsys) -> None:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=2)
    config.data = PEOPLE
    config.data.template = "chat"
    config.data.validation_size = 2
    config.data.test_size = 10
    config.eval.metrics = ["classification"]
    config.bias = BiasConfig(probes=["gender"], limit=None)
    result = tunelab.train(config)
    saved = json.loads((result.run_dir / "bias.json").read_text())
    assert [p["system"] for p in saved["probes"]] == ["base 0-shot", "fine-tuned"]
    assert all(p["n"] > 0 for p in saved["probes"])
    assert "## Bias (counterfactual probes)" in (result.run_dir / "report.md").read_text()

    assert main(["bias", "--list"]) == 0 and "names_ethnicity" in capsys.readouterr().out
    assert main(["bias", "--adapter", str(result.run_dir), "--baselines", "none",
                 "--probes", "gender"]) == 0
    assert "gender" in capsys.readouterr().out
    assert main(["bias", "--adapter", str(result.run_dir), "--probes", "gendr"]) == 2
    message = capsys.readouterr().err.strip()
    assert "gendr" in message and "\n" not in message


def test_bbq_lite_scores_are_the_models_own_choices(tiny_llama: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    shutil.copytree(DATA / "bbq", tmp_path / "cache" / "bigbench")
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    report = run_bias(_task(), parse_probes("gender"), model=str(tiny_llama), baselines=["zero"],
                      bbq=True, bbq_limit=3, bbq_categories=["age", "religion"])
    items = bbq_items(["age", "religion"], limit=3)
    assert len(items) == 12
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    result = evaluate_records(lm, bbq_task(), [i.record for i in items], 0, (), System.base())
    chosen = [i.record.columns["choices"].index(row["prediction"])
              for i, row in zip(items, result.predictions, strict=True)]
    expected = bbq_scores(items, chosen)
    assert [(b.system, b.category) for b in report.bbq] == [
        ("base 0-shot", "age"), ("base 0-shot", "religion"), ("base 0-shot", "all")]
    for row in report.bbq:
        assert row.score == expected[row.category]
    assert report.bbq[-1].score.acc_ambig == pytest.approx(
        100 * sum(c == i.gold for c, i in zip(chosen, items, strict=True)
                  if i.condition == "ambig") / 6)
    assert "BBQ-lite" in report.table()
