"""model.init_from: a run starts where an earlier run ended (its adapter continued, or the run
merged), records its lineage, and scores every earlier stage's task after training (the stage x
task matrix); bad starts are one line, exit 2, before any model loads."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import tunelab
from tests.helpers import interrupt_then_resume, tiny_run_config
from tunelab.cli import main
from tunelab.config import ModelConfig, RunConfig
from tunelab.methods import METHODS
from tunelab.methods.base import parse_options
from tunelab.models import load_model
from tunelab.models.kinds import CAUSAL
from tunelab.runs import RunDir, System, write_config
from tunelab.runs.adapter_set import AdapterSet
from tunelab.runs.run_dir import load_run_model
from tunelab.training.loop import Trainer

TEXT = "Classify the sentiment. A warm, funny and moving film."


def stage(tiny_llama: Path, out: Path, name: str, init_from: Path | None = None,
          method: dict[str, Any] | None = None, **train: Any) -> RunConfig:
    config = tiny_run_config(tiny_llama, out, name=name, method=method, **train)
    config.model = replace(config.model, init_from=str(init_from) if init_from else None)
    return config


def logits(model: torch.nn.Module, tokenizer: Any) -> torch.Tensor:  # Any: a HF tokenizer
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids).logits
    model.train(was_training)
    return out


class Spy:
    """Records the Trainer's model just before the first step and just after the last."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tokenizer: Any) -> None:  # Any: HF
        self.first: dict[str, Any] = {}  # Any: logits and trainable tensors
        self.last: torch.Tensor | None = None
        spy = self

        class Watched(Trainer):
            def fit(self):  # noqa: ANN202
                spy.first = {"logits": logits(self.model, tokenizer),
                             "trainable": {n: p.detach().clone()
                                           for n, p in self.model.named_parameters()
                                           if p.requires_grad}}
                state = super().fit()
                spy.last = logits(self.trained_model(), tokenizer)
                return state

        monkeypatch.setattr("tunelab.training.loop.Trainer", Watched)  # what train() builds


@pytest.fixture(scope="module")
def stage1(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LoRA run (r 4), evaluated on its test split."""
    out = tmp_path_factory.mktemp("stages")
    return tunelab.train(stage(tiny_llama, out, "stage1")).run_dir


def test_a_continued_adapter_starts_exactly_where_the_earlier_run_ended(
        stage1: Path, tiny_llama: Path, tiny_tokenizer: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch, tiny_tokenizer)
    # another dropout is training-only: the adapter still continues
    config = stage(tiny_llama, tmp_path, "stage2", stage1,
                   method={"name": "lora", "r": 4, "dropout": 0.0})
    result = tunelab.train(config)

    earlier = load_run_model(stage1).model
    base = load_model(ModelConfig(name=str(tiny_llama))).model
    assert not torch.allclose(logits(earlier, tiny_tokenizer), logits(base, tiny_tokenizer),
                              atol=1e-4), "stage 1 must have moved away from the base"
    assert torch.allclose(spy.first["logits"], logits(earlier, tiny_tokenizer), atol=1e-6)
    saved = load_file(str(stage1 / "adapter" / "adapter_model.safetensors"))
    trainable = {n.replace(".default", ""): t for n, t in spy.first["trainable"].items()}
    assert set(trainable) == set(saved)  # exactly the adapter trains, all of it
    assert all(torch.equal(trainable[n], saved[n]) for n in saved)
    assert any(n.endswith("lora_B.weight") and saved[n].abs().sum() > 0 for n in saved)
    assert not torch.allclose(spy.last, spy.first["logits"], atol=1e-5)  # stage 2 trained

    summary = result.summary
    assert summary["init_from"]["start"] == "continue"
    assert "continuing its lora adapter" in summary["init_from"]["how"]
    assert summary["lineage"] == [{"run": str(stage1.resolve()), "method": "lora",
                                   "tasks": ["stage1"], "start": "base"}]
    # the continued adapter loads onto the base alone, computing what training ended with
    assert torch.allclose(logits(load_run_model(result.run_dir).model, tiny_tokenizer),
                          spy.last, atol=1e-5)


def test_the_stage_matrix_pairs_each_stage_against_the_one_before(
        stage1: Path, tiny_llama: Path, tmp_path: Path) -> None:
    second = tunelab.train(stage(tiny_llama, tmp_path, "stage2", stage1, max_steps=2)).run_dir
    # a third stage of another method: stage 2 merged, ia3 on top
    third = tunelab.train(stage(tiny_llama, tmp_path, "stage3", second,
                                method={"name": "ia3"}, lr=5e-2, max_steps=2))
    summary = third.summary
    assert summary["init_from"]["start"] == "merge"
    assert [s["run"] for s in summary["lineage"]] == [str(stage1.resolve()),
                                                       str(second.resolve())]
    assert [s["start"] for s in summary["lineage"]] == ["base", "continue"]
    matrix = summary["stages"]
    assert matrix["tasks"] == ["stage1", "stage2", "stage3"]
    rows = matrix["rows"]
    assert [r["stage"] for r in rows] == [1, 2, 3] and rows[2]["method"] == "ia3"
    key = matrix["keys"]["stage1"]

    def score(run: Path, *below: str) -> float:
        found = json.loads(RunDir(run).eval_dir(System.tuned()).metrics.read_text()) \
            if not below else json.loads((run / "stages" / below[0] / below[1]
                                          / "metrics.json").read_text())
        return found["scores"][key]

    # each cell is that stage's model on the task, read from where it was scored
    assert rows[0]["scores"]["stage1"] == score(stage1)
    assert rows[1]["scores"]["stage2"] == score(second)
    assert rows[1]["scores"]["stage1"] == score(second, System.tuned().slug, "stage1")
    assert rows[0]["scores"]["stage2"] == score(second, System.tuned("stage1").slug, "stage2")
    assert rows[2]["scores"]["stage3"] == third.summary["stages"]["rows"][2]["scores"]["stage3"]
    assert rows[0]["scores"]["stage3"] is None  # two stages ahead: nothing pairs with it
    # the change of every cell against the stage above, paired per item
    for below, above in ((1, 0), (2, 1)):
        for task in matrix["tasks"][:below + 1]:
            change = rows[below]["changes"][task]
            assert change is not None, (below, task)
            assert change["delta"] == pytest.approx(rows[below]["scores"][task]
                                                    - rows[above]["scores"][task])
            assert change["ci"][0] <= change["delta"] <= change["ci"][1]
    assert all(c is None for c in rows[0]["changes"].values())
    assert json.loads((third.run_dir / "stages" / "stages.json").read_text()) == matrix
    report = (third.run_dir / "report.md").read_text()
    assert "## Stages (model.init_from)" in report and "stage2 (lora, continue)" in report
    assert "Stages" in (third.run_dir / "report.html").read_text()
    # a continued adapter shares the plain base with others; one on a merged start cannot
    assert AdapterSet.from_runs({"second": second}).names == ["second"]
    with pytest.raises(tunelab.TunelabError, match="merged into the base"):
        AdapterSet.from_runs({"third": third.run_dir})


def test_a_merged_start_gives_the_earlier_logits_and_loads_back_through_it(
        stage1: Path, tiny_llama: Path, tiny_tokenizer: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch, tiny_tokenizer)
    config = stage(tiny_llama, tmp_path, "full", stage1, method={"name": "full"}, lr=1e-3)
    result = tunelab.train(config, evaluate_after=False)
    earlier = logits(load_run_model(stage1).model, tiny_tokenizer)
    assert torch.allclose(spy.first["logits"], earlier, atol=1e-5)
    base = load_model(ModelConfig(name=str(tiny_llama))).model
    assert set(spy.first["trainable"]) == {n for n, _ in base.named_parameters()}
    assert not torch.allclose(spy.last, earlier, atol=1e-5)
    assert result.summary["init_from"]["start"] == "merge"
    assert "its lora folded in" in result.summary["init_from"]["how"]
    assert torch.allclose(logits(load_run_model(result.run_dir).model, tiny_tokenizer),
                          spy.last, atol=1e-5)


def test_resume_of_an_init_from_run_is_exact(stage1: Path, tiny_llama: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tunelab.train(stage(tiny_llama, tmp_path, "whole", stage1), evaluate_after=False)
    resumed = interrupt_then_resume(stage(tiny_llama, tmp_path, "resumed", stage1), monkeypatch)
    a = load_file(str(whole.run_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.run_dir / "adapter" / "adapter_model.safetensors"))
    started = load_file(str(stage1 / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], started[n]) for n in a)
    assert resumed.summary["init_from"]["start"] == "continue"


@pytest.fixture(scope="module")
def prompt_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prompt")
    config = stage(tiny_llama, out, "prompt", method={"name": "prompt", "num_virtual_tokens": 2},
                   max_steps=1)
    return tunelab.train(config, evaluate_after=False).run_dir


def _refused(config: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> str:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model loaded before model.init_from was checked")

    monkeypatch.setattr("tunelab.runs.start.load_model", no_model)
    monkeypatch.setattr("tunelab.runs.run_dir.RunDir.load_model", no_model)
    path = tmp_path / f"{config.name}.yaml"
    write_config(config, tmp_path / "cfg")
    path.write_text((tmp_path / "cfg" / "config.yaml").read_text())
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert not config.run_dir.exists()  # nothing written
    return err


def test_bad_starts_are_one_line_before_any_model_loads(
        stage1: Path, prompt_run: Path, tiny_llama: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    err = _refused(stage(tiny_llama, out, "a", tmp_path / "nowhere"), tmp_path, capsys,
                   monkeypatch)
    assert "model.init_from" in err and "no run there" in err

    unfinished = out / "unfinished"
    write_config(stage(tiny_llama, out, "unfinished"), unfinished)
    err = _refused(stage(tiny_llama, out, "b", unfinished), tmp_path, capsys, monkeypatch)
    assert "has not finished" in err and "--resume" in err

    other = stage(tiny_llama, out, "c", stage1)
    other.model = replace(other.model, num_layers=1)
    err = _refused(other, tmp_path, capsys, monkeypatch)
    assert "another base model" in err and "model.num_layers: 1 here, None there" in err

    err = _refused(stage(tiny_llama, out, "d", stage1, method={"name": "lora", "r": 8}),
                   tmp_path, capsys, monkeypatch)
    assert "method.r: 8 here, 4 there" in err and "tunelab merge" in err

    err = _refused(stage(tiny_llama, out, "e", prompt_run), tmp_path, capsys, monkeypatch)
    assert "its method prompt can neither be continued by method lora nor merged" in err
    assert "use method prompt" in err


def test_a_run_cannot_start_from_itself(stage1: Path, tiny_llama: Path) -> None:
    config = stage(tiny_llama, stage1.parent, "stage1", stage1)
    with pytest.raises(tunelab.TunelabError, match="this run's own directory"):
        RunDir(config.run_dir).start(config)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_can_merge_says_what_merge_does(name: str, tiny_llama: Path) -> None:
    """model.init_from decides from `can_merge` before any model loads; it must be true."""
    method = METHODS[name]
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    options = parse_options(method, {**method.sweep_options})
    model = method.apply(lm.model, options, CAUSAL)
    assert (method.merge(model) is not None) == method.can_merge
