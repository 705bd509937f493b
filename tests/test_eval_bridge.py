"""The lm-evaluation-harness bridge: tunelab's model answers lm-eval's three request types as
lm-eval's own HF model does, and a small local lm-eval task runs through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import DATA
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from tunelab.cli import main
from tunelab.config import DataConfig, EvalConfig, ModelConfig, TaskConfig
from tunelab.eval.harness import TunelabLM
from tunelab.eval.runner import evaluate_loaded
from tunelab.models import load_model
from tunelab.runs import System

LONG = "the movie was good and the plot was great , " * 30


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))


@pytest.fixture(scope="module")
def hf(lm):
    return HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=3, max_length=64)


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_three_request_types_match_lm_evals_hf_model(lm, hf) -> None:
    ours = TunelabLM(lm=lm, batch_size=3, max_length=64)
    pairs = [("the movie was", " good"), ("the movie was", " bad"), ("a plot ", "twist here"),
             ("", "positive review"), ("the story is also as unoriginal", " as they come ."),
             (LONG, " good")]  # the last one is cut from the left to 64 tokens, as lm-eval does
    expected = hf.loglikelihood(_requests("loglikelihood", pairs), disable_tqdm=True)
    got = ours.loglikelihood(_requests("loglikelihood", pairs))
    for (lp, greedy), (want_lp, want_greedy) in zip(got, expected, strict=True):
        assert lp == pytest.approx(want_lp, abs=1e-3) and greedy == want_greedy
    texts = [(LONG,), ("short text",)]  # LONG spans several 64-token windows
    assert ours.loglikelihood_rolling(_requests("loglikelihood_rolling", texts)) == pytest.approx(
        hf.loglikelihood_rolling(_requests("loglikelihood_rolling", texts), disable_tqdm=True), abs=1e-2)
    gen = [(c, {"until": ["\n", "."], "max_gen_toks": 6, "do_sample": False})
           for c in ["the movie was", "a plot twist", "dull"]]
    assert ours.generate_until(_requests("generate_until", gen)) == hf.generate_until(
        _requests("generate_until", gen), disable_tqdm=True)


def write_lm_eval_task(tmp_path: Path) -> Path:
    """A local lm-eval task (YAML + JSONL) over the test reviews; returns the data file."""
    data = tmp_path / "reviews.jsonl"
    data.write_text((DATA / "reviews.jsonl").read_text())
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_reviews.yaml").write_text(yaml.safe_dump({
        "task": "tiny_reviews", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "hf")},
        "test_split": "test", "output_type": "multiple_choice",
        "doc_to_text": "Review: {{text}}\nSentiment:", "doc_to_choice": ["positive", "negative"],
        "doc_to_target": "{{['positive', 'negative'].index(label)}}",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}))
    return data


def test_local_lm_eval_task_runs_through_the_bridge(lm, hf, tmp_path: Path) -> None:
    data = write_lm_eval_task(tmp_path)
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    results = {}
    for name, model in (("tunelab", TunelabLM(lm=lm, batch_size=4)), ("hf", hf)):
        out = simple_evaluate(model=model, tasks=["tiny_reviews"], task_manager=manager, limit=12,
                              bootstrap_iters=0, log_samples=False)
        results[name] = out["results"]["tiny_reviews"]
    assert results["tunelab"]["acc,none"] == results["hf"]["acc,none"]
    assert results["tunelab"]["acc_norm,none"] == results["hf"]["acc_norm,none"]
    # tunelab's own evaluation of the same items in the same prompt gives the same accuracy.
    task = TaskConfig(name="tiny_reviews", output_type="multiple_choice", choices=["positive", "negative"],
                      data=DataConfig(train_file=str(data), test_file=str(data), template="format",
                                      fields={"input": "text", "output": "label"},
                                      prompt_format="Review: {input}\nSentiment:",
                                      completion_format=" {output}"),
                      eval=EvalConfig(metrics=["multiple_choice"], bootstrap=0))
    ours = evaluate_loaded(lm, task, System.base(), limit=12)
    assert ours.scores["acc"] / 100 == pytest.approx(results["hf"]["acc,none"])
    assert ours.scores["acc_norm"] / 100 == pytest.approx(results["hf"]["acc_norm,none"])
    json.dumps(results)  # plain numbers


def test_harness_command(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    write_lm_eval_task(tmp_path)
    assert main(["harness", "--tasks", "tiny_reviews", "--model", str(tiny_llama), "--limit", "4",
                 "--include-path", str(tmp_path / "tasks")]) == 0
    table = capsys.readouterr().out
    assert "tiny_reviews" in table and "acc" in table
