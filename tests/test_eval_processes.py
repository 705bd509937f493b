"""`--nproc 2` evaluation: two processes give the predictions and scores of one, for every
output type that reads prompts, with shots; a model that exists only here is scored here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from eval_helpers import REVIEWS
from helpers import tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig, to_dict
from tunelab.eval import processes as processes_module
from tunelab.eval.processes import EvalProcesses
from tunelab.eval.runner import evaluate_loaded
from tunelab.models import load_model
from tunelab.runs import System


@pytest.fixture(autouse=True)
def _no_result_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item really runs in the process that scores it (no lookups)."""
    monkeypatch.setenv("TUNELAB_EVAL_CACHE", "off")


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of items of each share sent to a worker."""
    counts: list[int] = []
    real = processes_module.Share.__init__

    def counted(self: processes_module.Share, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        counts.append(len(self.records))
    monkeypatch.setattr(processes_module.Share, "__init__", counted)
    return counts


def tasks() -> list[tuple[TaskConfig, int]]:
    generated = TaskConfig(name="reviews_gen", data=REVIEWS, eval=EvalConfig(
        metrics=["accuracy", "perplexity"], bootstrap=50,
        generation=GenerationConfig(max_new_tokens=4, batch_size=3, stop=["\n"])))
    choices = TaskConfig(name="reviews_mc", output_type="multiple_choice", data=REVIEWS,
                         choices=["positive", "negative"],
                         eval=EvalConfig(metrics=["multiple_choice", "classification"],
                                         labels=["positive", "negative"], bootstrap=50))
    return [(generated, 2), (choices, 3)]


def test_two_processes_give_the_predictions_and_scores_of_one(tiny_llama: Path,
                                                              sent: list[int]) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    assert lm.recipe is not None
    for task, shots in tasks():
        one = evaluate_loaded(lm, task, System.base(shots), shots=shots)
        with EvalProcesses(2, threads=1):
            two = evaluate_loaded(lm, task, System.base(shots), shots=shots)
        assert [r["prediction"] for r in two.predictions] == [r["prediction"]
                                                             for r in one.predictions]
        assert [r["prompt"] for r in two.predictions] == [r["prompt"] for r in one.predictions]
        assert [r["index"] for r in two.predictions] == list(range(one.n))
        assert two.scores == pytest.approx(one.scores, abs=1e-5)
        assert two.ci.keys() == one.ci.keys() and all(  # the same bootstrap on the same items
            two.ci[k] == pytest.approx(one.ci[k], abs=1e-5) for k in one.ci)
        assert all(r["prediction"] for r in one.predictions)
    assert sent == [4, 4]  # the second half of each task's 8 items went to the worker


def test_a_model_changed_since_loading_is_scored_here(tiny_llama: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    with torch.no_grad():
        next(lm.model.parameters()).add_(0.5)  # the worker would load other weights
    task, shots = tasks()[1]
    one = evaluate_loaded(lm, task, System.base(shots), shots=shots)
    with EvalProcesses(2, threads=1), pytest.warns(UserWarning, match="weights differ"):
        two = evaluate_loaded(lm, task, System.base(shots), shots=shots)
    assert [x for r in two.predictions for x in r["logprobs"]] == pytest.approx(
        [x for r in one.predictions for x in r["logprobs"]], abs=1e-5)


def test_a_run_just_trained_is_scored_by_the_workers_with_the_weights_it_saved(
        tiny_llama: Path, tmp_path: Path, sent: list[int]) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, max_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "weights differ" would be an error here
        warnings.filterwarnings("ignore", message="(?!the model's weights differ)")
        with EvalProcesses(2, threads=1):
            result = tunelab.train(config)
    assert sent == [4] and result.evaluation is not None and result.evaluation.n == 8
    assert [r["index"] for r in result.evaluation.predictions] == list(range(8))


def test_the_environment_sets_the_default_processes(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: list[int],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --nproc, $TUNELAB_EVAL_NPROC decides (the suite sets 1: no worker starts)."""
    task = tmp_path / "reviews.yaml"
    generated = tasks()[0][0]
    task.write_text(yaml.safe_dump({"name": "reviews", "data": to_dict(generated.data),
                                    "eval": to_dict(generated.eval)}))
    args = ["eval", "--task", str(task), "--model", str(tiny_llama), "--limit", "4",
            "--json"]
    assert main(args) == 0 and sent == []
    one = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("TUNELAB_EVAL_NPROC", "2")
    assert main(args) == 0 and sent == [2]
    assert json.loads(capsys.readouterr().out)["scores"] == one["scores"]
    monkeypatch.setenv("TUNELAB_EVAL_NPROC", "two")
    assert main(args) == 2
    assert "TUNELAB_EVAL_NPROC='two'" in capsys.readouterr().err
