"""`tunelab robustness`, the `robustness:` block and `data.augment` on the tiny test model.

Every number the report gives is recomputed here from independent evaluations of the same
perturbed records, so a report that scored the clean items twice (or perturbed nothing) fails.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eval_helpers import EVAL_DATA, REVIEWS
from helpers import DATA, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    RobustnessConfig,
    TaskConfig,
)
from tunelab.core.errors import TunelabError
from tunelab.data import load_splits
from tunelab.data.training_tasks import augmented
from tunelab.data.transforms.perturbations import (
    get_perturbation,
    parse_perturbations,
    perturb_record,
)
from tunelab.eval import generation
from tunelab.eval.compare import item_scores
from tunelab.eval.datasets import load_task_data
from tunelab.eval.output_types import Framing, input_text
from tunelab.eval.processes import EvalProcesses
from tunelab.eval.runner import evaluate_records, evaluate_versions
from tunelab.models import load_model
from tunelab.models.prompt_caches import kept_prompts
from tunelab.runs import System
from tunelab.runs.run_dir import load_run_model
from tunelab.studies.robustness import item_key, run_robustness

LABELS = ["positive", "negative"]


def _reviews_task() -> TaskConfig:
    return TaskConfig(name="reviews", data=REVIEWS, output_type="generate",
                      eval=EvalConfig(metrics=["classification"], labels=LABELS,
                                      generation=GenerationConfig(max_new_tokens=3, batch_size=8)))


def test_every_number_is_the_independent_evaluation_of_the_same_perturbed_items(
        tiny_llama: Path, tmp_path: Path) -> None:
    task = _reviews_task()
    perturbations = parse_perturbations("typo,uppercase")
    report = run_robustness(task, perturbations, model=str(tiny_llama), baselines=["zero", "2"],
                            severities=[0.1, 0.3], seed=3, out_dir=tmp_path / "out")
    # typo at two severities, uppercase once (it has no severity): 3 variants x 2 systems
    assert [(r.system, r.perturbation, r.severity) for r in report.rows] == [
        (s, p, v) for s in ("base 0-shot", "base 2-shot")
        for p, v in (("typo", 0.1), ("typo", 0.3), ("uppercase", None))]
    data = load_task_data(task)
    records = data.split("test")
    pool = data.split(task.shot_split())
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    for shots, system in ((0, "base 0-shot"), (2, "base 2-shot")):
        clean = evaluate_records(lm, task, records, shots, pool, System.base(shots),
                                 Framing.of(task, data))
        rows = [r for r in report.rows if r.system == system]
        per_item = [item_scores(task, clean).values]
        for row in rows:
            perturbation = get_perturbation(row.perturbation)
            noisy_records = [perturb_record(r, perturbation, row.severity or 1.0, 3, item_key(r, i))
                             for i, r in enumerate(records)]
            noisy = evaluate_records(lm, task, noisy_records, shots, pool, System.base(shots),
                                     Framing.of(task, data))
            key = row.key
            assert row.clean == pytest.approx(clean.scores[key])
            assert row.perturbed == pytest.approx(noisy.scores[key])
            assert row.delta == pytest.approx(noisy.scores[key] - clean.scores[key])
            assert row.ci[0] <= row.delta <= row.ci[1]
            assert row.changed_inputs == sum(input_text(a) != input_text(b)
                                             for a, b in zip(records, noisy_records, strict=True))
            assert row.changed_inputs > 0  # the noise reached the prompts
            flips = [a["prediction"].strip().lower() != b["prediction"].strip().lower()
                     for a, b in zip(clean.predictions, noisy.predictions, strict=True)]
            assert row.changed_predictions == pytest.approx(100 * sum(flips) / len(flips))
            if row.severity in (0.3, None):
                per_item.append(item_scores(task, noisy).values)
        worst = next(w for w in report.worst if w.system == system and w.severity == 0.3)
        assert worst.worst == pytest.approx(float(np.mean(np.min(per_item, axis=0))))
        assert worst.worst <= min(r.perturbed for r in rows if r.severity in (0.3, None))
    out = tmp_path / "out"
    saved = json.loads((out / "robustness.json").read_text())
    assert len(saved["rows"]) == 6 and saved["variants"][0]["label"] == "typo@0.1"
    assert (out / "robustness.png").stat().st_size > 1000
    assert (out / "severity.png").stat().st_size > 1000  # two severities: the sweep plot
    consistency = [json.loads(line) for line in
                   (out / "base-0-shot" / "consistency.jsonl").read_text().splitlines()]
    assert len(consistency) == len(records) and {"key", "changed"} <= set(consistency[0])
    assert (out / "base-2-shot" / "typo-0.3" / "predictions.jsonl").is_file()
    # Deterministic: the same seed gives the same noisy prompts and the same report.
    again = run_robustness(task, perturbations[:1], model=str(tiny_llama), baselines=["zero"],
                           severities=[0.1], seed=3)
    assert again.rows[0] == report.rows[0]


def test_multiple_choice_and_classification_head(tiny_llama: Path, tmp_path: Path) -> None:
    mc = TaskConfig(name="mc_anatomy", output_type="multiple_choice",
                    data=DataConfig(source=f"mmlu:{EVAL_DATA / 'mmlu'}:anatomy"),
                    eval=EvalConfig(metrics=["multiple_choice"]))
    from tunelab.eval.tasks import apply_source_defaults  # the loader's defaults for a source

    apply_source_defaults(mc, {})
    report = run_robustness(mc, parse_perturbations("lowercase"), model=str(tiny_llama),
                            baselines=["zero"])
    assert report.key == "acc" and report.rows[0].changed_inputs > 0
    head = TaskConfig(name="reviews_head", output_type="classification", data=REVIEWS,
                      eval=EvalConfig(metrics=["classification"], labels=LABELS))
    report = run_robustness(head, parse_perturbations("char_noise"), model=str(tiny_llama),
                            baselines=["zero"], severities=[0.5])
    row = report.rows[0]
    assert row.system == "base 0-shot" and row.changed_inputs == row.n == 8
    assert 0 <= row.changed_predictions <= 100


def test_training_block_scores_before_and_after_and_augment_perturbs_a_share(
        tiny_llama: Path, tmp_path: Path) -> None:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=4)
    config.eval.metrics = ["classification"]
    config.robustness = RobustnessConfig(perturbations=["typo", "lowercase"], severity=[0.2],
                                         limit=None)
    config.data.augment = AugmentConfig(perturbations=["typo"], share=0.5, severity=0.3)
    result = tunelab.train(config)
    saved = json.loads((result.run_dir / "robustness" / "robustness.json").read_text())
    assert saved["systems"] == ["base 0-shot", "fine-tuned"]
    assert [(b["perturbation"], b["severity"]) for b in saved["brittleness"]] == [
        ("typo", 0.2), ("lowercase", None)]
    rows = {(r["system"], r["perturbation"]): r for r in saved["rows"]}
    # "after" is the fine-tuned model's clean score: the run's own test evaluation
    assert rows[("fine-tuned", "typo")]["clean"] == pytest.approx(
        result.evaluation.scores[saved["key"]])
    for b in saved["brittleness"]:
        before = rows[("base 0-shot", b["perturbation"])]
        after = rows[("fine-tuned", b["perturbation"])]
        assert b["before_drop"] == pytest.approx(before["delta"])
        assert b["after_drop"] == pytest.approx(after["delta"])
        assert b["change"] == pytest.approx(after["delta"] - before["delta"])
    assert "## Robustness (noisy input)" in (result.run_dir / "report.md").read_text()
    assert "robustness" in result.summary
    # data.augment: exactly half of the training inputs differ from the clean split, and the
    # trained model was fed those (the same function prepares the run's data).
    train = load_splits(config.data).train
    noisy = augmented(train, config.data.augment)
    changed = [a.input != b.input for a, b in zip(train, noisy, strict=True)]
    assert sum(changed) >= round(0.5 * len(train)) - 1 and sum(changed) <= round(0.5 * len(train))
    assert [r.output for r in noisy] == [r.output for r in train]
    assert load_run_model(result.run_dir) is not None


def test_cli_and_one_line_errors(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    task_file = tmp_path / "reviews.yaml"
    task_file.write_text(json.dumps({
        "name": "reviews", "output_type": "generate",
        "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                 "template": "format", "prompt_format": "Review: {input}\nSentiment:",
                 "completion_format": " {output}", "test_size": 6, "validation_size": 0},
        "eval": {"metrics": ["classification"], "labels": LABELS,
                 "generation": {"max_new_tokens": 2}}}))
    code = main(["robustness", "--task", str(task_file), "--model", str(tiny_llama),
                 "--baselines", "zero", "--perturbations", "punctuation,slang", "--limit", "4",
                 "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0 and "punctuation" in out and "worst case" in out
    assert main(["robustness", "--list"]) == 0 and "ocr" in capsys.readouterr().out

    def error(args: list[str]) -> str:
        assert main(args) == 2
        message = capsys.readouterr().err.strip()
        assert "\n" not in message and "Traceback" not in message
        return message

    base = ["robustness", "--task", str(task_file), "--model", str(tiny_llama)]
    assert "perturbation 'tpyo'" in error([*base, "--perturbations", "tpyo"])
    assert "--severity" in error([*base, "--severity", "0"])
    assert "--severity" in error([*base, "--severity", "lots"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"text": "" if i else "fine .", "label": "positive"})
                             + "\n" for i in range(10)))  # one input: the reader takes it
    no_input = tmp_path / "no_input.yaml"
    no_input.write_text(task_file.read_text().replace(str(DATA / "reviews.jsonl"), str(empty)))
    assert "no input text" in error(["robustness", "--task", str(no_input), "--model",
                                     str(tiny_llama), "--perturbations", "typo"])
    assert "--task" in error(["robustness", "--model", str(tiny_llama)])
    config = tiny_run_config(tiny_llama, tmp_path / "runs")
    config.robustness = RobustnessConfig(perturbations=["typo", "nope"])
    with pytest.raises(TunelabError, match="robustness.perturbations"):
        tunelab.train(config)
    assert not (tmp_path / "runs" / "run").exists()  # refused before anything was written
    config.robustness = RobustnessConfig()
    with pytest.raises(TunelabError, match=r"^data.augment.share 1.5: must be a number >= 0 and <= 1"):
        AugmentConfig(perturbations=["typo"], share=1.5)  # refused where the config is made


def test_versions_scored_together_equal_each_scored_alone(
        tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study's versions of the items in one generation call, after the clean items were kept:
    each version's predictions and scores are those of its own evaluation, shots included."""
    monkeypatch.setenv("TUNELAB_EVAL_CACHE", "off")  # every prediction computed, none looked up
    task = _reviews_task()
    data = load_task_data(task)
    records, pool = data.split("test"), data.split(task.shot_split())
    framing = Framing.of(task, data)
    versions = [[perturb_record(r, get_perturbation(name), 0.3, 3, item_key(r, i))
                 for i, r in enumerate(records)] for name in ("typo", "uppercase")]
    versions += [list(records), versions[0]]  # nothing changed (all in the store); a repeat
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    calls: list[int] = []
    real = generation._generate

    def counted(prompts: Any, *args: Any, **kwargs: Any) -> Any:  # Any: _generate's own
        calls.append(len(prompts))
        return real(prompts, *args, **kwargs)
    monkeypatch.setattr(generation, "_generate", counted)
    for shots, processes in ((0, contextlib.nullcontext()), (2, EvalProcesses(1))):
        system = System.base(shots)
        alone = [evaluate_records(lm, task, v, shots, pool, system, framing) for v in versions]
        calls.clear()
        with processes, kept_prompts(lm) as kept:  # as the CLI runs it: one process, no worker
            evaluate_records(lm, task, records, shots, pool, system, framing)
            together = evaluate_versions(lm, task, versions, shots, pool, system, framing)
        # The clean items; then the versions in one call, the repeated one's prompts run once.
        assert calls == [len(records), 3 * len(records)]
        assert kept.reused_tokens > 0
        for one, joint in zip(alone, together, strict=True):
            assert [r["prediction"] for r in joint.predictions] == \
                [r["prediction"] for r in one.predictions]
            assert [r["input"] for r in joint.predictions] == [r["input"] for r in one.predictions]
            assert joint.scores == one.scores and joint.n == one.n == len(records)
        assert together[0].predictions[0]["input"] != together[2].predictions[0]["input"]
