"""`tunelab bias --generation` and the `bias.generation` block: aligned prompt lists, group
statistics against hand-worked values and scipy, seeded completions, the block before and
after training on the tiny model, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_run_config
from scipy import stats

import tunelab
from tunelab.cli import main
from tunelab.config import BiasConfig, ModelConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.datasets.group_prompts import fill, read_axes, slots_of
from tunelab.models import load_model
from tunelab.runs import RunDir
from tunelab.studies.generation_bias import (
    Completion,
    GenerationProbe,
    PromptFraming,
    complete,
    summarise,
)


def test_every_axis_gives_every_group_the_same_templates() -> None:
    axes = read_axes()
    assert {a.name for a in axes} >= {"gender", "race", "religion", "profession"}
    for axis in axes:
        prompts = axis.prompts()
        groups = list(axis.groups)
        assert len(prompts) == len(axis.templates) * len(groups)
        for index, template in enumerate(axis.templates):
            mine = [p for p in prompts if p.template == index]
            assert [p.group for p in mine] == groups
            # Blank each group's own terms: what is left is the same text for every group.
            blanked = set()
            for p in mine:
                slots = axis.groups[p.group]
                blanked.add(fill(template, {k: "_" for k in slots}))
                assert all(v in p.text or v[:1].upper() + v[1:] in p.text
                           for k, v in slots.items() if k.lower() in
                           {s.lower() for s in slots_of(template)})
            assert len(blanked) == 1, (axis.name, template, blanked)
    religion = next(a for a in axes if a.name == "religion")
    assert "Two Muslims walked into a" in [p.text for p in religion.prompts()]


def _completion(group: str, template: int, sentiment: float, hurtful: float = 0.0,
                system: str = "base", sample: int = 0) -> Completion:
    return Completion(system, "raw", "axis", group, template, sample, "", "",
                      {"sentiment": sentiment, "offensive": 0.0, "hurtful": hurtful})


class _Axis:
    name = "axis"
    groups = {"a": {}, "b": {}}


def test_group_gaps_and_changes_against_hand_worked_values_and_scipy() -> None:
    # Group a's sentiment per template 0.1, 0.5, 0.3 and b's -0.2, 0.0, 0.2 (two samples each
    # prompt, averaged first); the fine-tune moves group a by +0.1, +0.2, +0.3.
    a, b = [0.1, 0.5, 0.3], [-0.2, 0.0, 0.2]
    done = []
    for t in range(3):
        for s, wobble in enumerate((-0.05, 0.05)):
            done += [_completion("a", t, a[t] + wobble, sample=s),
                     _completion("b", t, b[t] + wobble, hurtful=float(t == 0), sample=s),
                     _completion("a", t, a[t] + (t + 1) / 10 + wobble, system="tuned", sample=s),
                     _completion("b", t, b[t] + wobble, system="tuned", sample=s)]
    report = summarise(done, [_Axis()], 2, tuned=["tuned"])  # type: ignore[list-item]
    rows = {(r.system, r.group, r.measure): r for r in report.groups}
    assert rows[("base", "a", "sentiment")].value == pytest.approx(0.3)
    assert rows[("base", "b", "sentiment")].value == pytest.approx(0.0)
    assert rows[("base", "b", "hurtful")].value == pytest.approx(100 / 3)  # 2 of 6 completions
    ci = rows[("base", "a", "sentiment")].ci
    assert ci[0] <= 0.3 <= ci[1] and ci[0] < ci[1]
    gap = next(g for g in report.gaps if (g.system, g.measure) == ("base", "sentiment"))
    assert gap.largest == pytest.approx(0.3) and gap.between == ("a", "b")
    # Per template a - b = 0.3, 0.5, 0.1; swapping a and b within templates flips each sign:
    # of the 8 patterns only (+,+,+) and (-,-,-) reach |gap| >= 0.3, so p = 2/8.
    assert gap.p_value == pytest.approx(0.25)
    assert gap.against_mean["a"] == (pytest.approx(0.15), pytest.approx(0.25))
    # The same test as scipy computes it on the per-template differences.
    scipy_p = stats.permutation_test((np.array(a), np.array(b)),
                                     lambda x, y: np.mean(x) - np.mean(y),
                                     permutation_type="samples").pvalue
    assert gap.p_value == pytest.approx(scipy_p)
    change = next(c for c in report.changes if (c.group, c.measure) == ("a", "sentiment"))
    assert (change.system, change.base) == ("tuned", "base")
    assert change.delta == pytest.approx(0.2) and change.after - change.before == pytest.approx(0.2)
    assert change.p_value == pytest.approx(0.25)  # all three differences positive: 2 of 8
    unchanged = next(c for c in report.changes if (c.group, c.measure) == ("b", "sentiment"))
    assert unchanged.delta == pytest.approx(0.0) and unchanged.p_value == 1.0
    # no group writes anything hurtful after training: a gap of 0 between two groups
    level = next(g for g in report.gaps if (g.system, g.measure) == ("tuned", "hurtful"))
    assert level.largest == 0 and sorted(level.between) == ["a", "b"]


def test_completions_are_deterministic_per_seed(tiny_llama: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    axes = tuple(read_axes(["gender"]))
    first = complete(lm, GenerationProbe(axes, samples=3, max_new_tokens=5, seed=1),
                     PromptFraming("raw"), "base")
    again = complete(lm, GenerationProbe(axes, samples=3, max_new_tokens=5, seed=1),
                     PromptFraming("raw"), "base")
    other = complete(lm, GenerationProbe(axes, samples=3, max_new_tokens=5, seed=2),
                     PromptFraming("raw"), "base")
    assert len(first) == 3 * len(axes[0].prompts())
    assert [c.text for c in first] == [c.text for c in again]
    greedy = [c.text for c in first if c.sample == 0]
    assert greedy == [c.text for c in other if c.sample == 0]  # greedy ignores the seed
    assert [c.text for c in first if c.sample > 0] != [c.text for c in other if c.sample > 0]
    assert any(c.text for c in first)
    assert all(set(c.scores) == {"sentiment", "offensive", "hurtful"} for c in first)


def test_generation_block_before_and_after_training(tiny_llama: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=2)
    config.bias = BiasConfig(generation=["gender"], generation_samples=2,
                             generation_max_new_tokens=4)
    result = tunelab.train(config)
    saved = json.loads((result.run_dir / "bias.json").read_text())["generation"]
    systems = {(r["system"], r["framing"]) for r in saved["groups"]}
    assert systems == {("base", "raw"), ("base", "task"), ("fine-tuned", "raw"),
                       ("fine-tuned", "task")}
    assert {(c["system"], c["base"], c["framing"]) for c in saved["changes"]} == {
        ("fine-tuned", "base", "raw"), ("fine-tuned", "base", "task")}
    prompts = len(read_axes(["gender"])[0].prompts())
    lines = (result.run_dir / "bias_completions.jsonl").read_text().splitlines()
    assert len(lines) == prompts * 2 * 2 * 2  # samples x framings x systems
    task_prompt = next(json.loads(x) for x in lines if json.loads(x)["framing"] == "task")
    assert task_prompt["prompt"] in [p.text for p in read_axes(["gender"])[0].prompts()]
    page = tunelab.build_report(result.run_dir).read_text()
    assert "gender: sentiment of completions per group" in page and 'id="bias"' in page
    assert "generation_largest_gap" in json.loads((result.run_dir / "summary.json").read_text())["bias"]

    # The command: the base model and the run, raw and in the task's template.
    capsys.readouterr()
    assert main(["bias", "--generation", "--adapter", str(result.run_dir), "--groups", "gender",
                 "--samples", "1", "--max-new-tokens", "3", "--out", str(tmp_path / "gb")]) == 0
    out = capsys.readouterr().out
    assert "Fine-tune - base" in out and "female" in out
    written = json.loads((tmp_path / "gb" / "generation_bias.json").read_text())
    assert {r["system"] for r in written["groups"]} == {"base", result.run_dir.name}


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], words: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_bad_input_is_one_line(tiny_llama: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    model = ["bias", "--generation", "--model", str(tiny_llama)]
    _one_line_exit_2([*model, "--groups", "gendr"], capsys, "--groups gendr")
    _one_line_exit_2([*model, "--samples", "0"], capsys, "--samples 0")
    missing = tmp_path / "prompts.yaml"
    missing.write_text("templates: ['{Person} worked as', '{People} are']\n"
                       "axes:\n  pets:\n    groups:\n"
                       "      cat: {person: the cat, people: cats}\n"
                       "      dog: {person: the dog}\n")
    _one_line_exit_2([*model, "--groups", "pets", "--group-prompts", str(missing)], capsys,
                     "group dog: no 'people'")
    # without --groups, a prompt file's own axes are read (not the built-in gender,race,...)
    _one_line_exit_2([*model, "--group-prompts", str(missing)], capsys, "group dog: no 'people'")
    _one_line_exit_2([*model, "--group-prompts", str(tmp_path / "none.yaml")], capsys,
                     "no such prompt file")
    # a classifier run has no head to write with: said from its config, before any model loads
    classifier = tmp_path / "classifier-run"
    config = tiny_run_config(tiny_llama, tmp_path, name="classifier-run")
    config.model.kind = "classifier"
    config.eval.metrics = ["classification"]
    RunDir(classifier).write_config(config)
    _one_line_exit_2(["bias", "--generation", "--adapter", str(classifier), "--baselines",
                      "zero"], capsys,
                     "classifier-run: a classifier model has no language-model head to write "
                     "with; --generation needs a causal or seq2seq model")
    with pytest.raises(TunelabError, match="bias.generation_samples"):
        BiasConfig(generation=["gender"], generation_samples=0)
