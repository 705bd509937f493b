"""The FLAN-style built-in mixture: BIG-bench task.json reading (a real-format fixture cut
from the bigbench==1.0.0 sdist), subtask selection, and a run with a held-out subtask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import DATA

import tunelab
from tunelab.config import (
    BuiltinMixtureConfig,
    DataConfig,
    EvalConfig,
    GenerationConfig,
    MixtureConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from tunelab.core.errors import TunelabError
from tunelab.data.bigbench_training import (
    natural_instructions_dir,
    natural_instructions_tasks,
    resolve_subtask,
)
from tunelab.data.sources import read_records

ROOT = DATA / "bigbench"
NI = ROOT / "natural_instructions"
SCIENCE = NI / "subtask047_misc_answering_science_questions" / "task.json"


def test_task_json_definition_is_the_instruction_first_target_the_output() -> None:
    raw = json.loads(SCIENCE.read_text())
    records = read_records(str(SCIENCE), fmt="bigbench")
    assert len(records) == len(raw["examples"]) == 12
    first = records[0]
    assert first.instruction == raw["description"] and first.instruction.startswith("Definition:")
    assert first.input == raw["examples"][0]["input"]
    assert first.output == raw["examples"][0]["target"][0] == "D."
    assert first.columns["targets"] == raw["examples"][0]["target"]
    assert first.origin == f"{SCIENCE}[example 0]"
    prefixed = read_records(str(SCIENCE), fmt="bigbench", fields={"instruction": "task_prefix"})
    assert prefixed[0].instruction == raw["task_prefix"] and "Prompt:" in prefixed[0].instruction


def test_bad_task_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"name": "x", "examples": [{"input": "a", "target": 3}]}')
    with pytest.raises(TunelabError, match=r"task.json\[example 0\]: 'target' must be"):
        read_records(str(path), fmt="bigbench")
    path.write_text('{"name": "x"}')
    with pytest.raises(TunelabError, match="not a BIG-bench JSON task"):
        read_records(str(path), fmt="bigbench")


def test_subtasks_are_found_under_any_level_of_the_tree(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert natural_instructions_dir(ROOT) == NI == natural_instructions_dir(NI)
    sdist = tmp_path / "bigbench-1.0.0" / "bigbench" / "benchmark_tasks" / "natural_instructions"
    shutil.copytree(NI, sdist)
    assert natural_instructions_dir(tmp_path) == sdist
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(TunelabError, match=r"cache/bigbench: no BIG-bench.*mixture.builtin.root"):
        natural_instructions_dir(None)
    shutil.copytree(NI, tmp_path / "cache" / "bigbench" / "natural_instructions")
    assert natural_instructions_dir(None) == tmp_path / "cache" / "bigbench" / "natural_instructions"
    for name in ("47", "047", "subtask047", SCIENCE.parent.name):
        assert resolve_subtask(NI, name) == SCIENCE
    with pytest.raises(TunelabError, match="unknown subtask '999'.*subtask005_mctaco"):
        resolve_subtask(NI, "999")


def test_builtin_selection_holds_out_a_task_type() -> None:
    base = DataConfig(template="alpaca", validation_size=2, test_size=2, max_length=300)
    tasks = natural_instructions_tasks(BuiltinMixtureConfig(name="natural_instructions", root=str(ROOT)),
                                       base, EvalConfig())
    assert [(t.name[:10], t.held_out) for t in tasks] == [
        ("subtask020", False), ("subtask047", False), ("subtask005", True)]  # wrong-answer generation
    assert all(t.data.format == "bigbench" and t.data.max_length == 300 for t in tasks)
    assert tasks[0].eval.metrics == ["rouge"] and tasks[0].max_train_examples == 1000
    chosen = natural_instructions_tasks(
        BuiltinMixtureConfig(name="natural_instructions", root=str(ROOT), train=["47"], held_out=["20"]),
        base, EvalConfig())
    assert [(t.name[:10], t.held_out) for t in chosen] == [("subtask047", False), ("subtask020", True)]


def test_builtin_mixture_trains_and_tracks_the_held_out_subtask(tiny_llama: Path, tmp_path: Path) -> None:
    config = RunConfig(
        name="flan", output_dir=str(tmp_path), model=ModelConfig(name=str(tiny_llama)),
        data=DataConfig(template="alpaca", validation_size=2, test_size=2, max_length=256),
        method={"name": "lora", "r": 2},
        train=TrainConfig(max_steps=3, batch_size=2, eval_every=3, log_every=1, warmup_ratio=0.0),
        eval=EvalConfig(generation=GenerationConfig(max_new_tokens=3, batch_size=2)),
        mixture=MixtureConfig(sampling="temperature", oversample=True, eval_limit=2,
                              builtin=BuiltinMixtureConfig(name="natural_instructions", root=str(ROOT),
                                                           max_train_examples=6)))
    result = tunelab.train(config, evaluate_after=False)
    tasks = result.summary["mixture"]["tasks"]
    held_out = "subtask005_mctaco_wrong_answer_generation_event_duration"
    assert tasks[held_out]["held_out"] and tasks[held_out]["examples_seen"] == 0
    assert tasks[held_out]["train_examples"] == 0 and tasks[held_out]["rate"] is None
    trained = [name for name, row in tasks.items() if not row["held_out"]]
    assert len(trained) == 2 and all(tasks[n]["train_examples"] == 6 for n in trained)
    assert sum(tasks[n]["examples_seen"] for n in trained) == 6
    evaluation = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()
                  if "val_loss" in line][-1]
    assert set(evaluation["val_loss_by_task"]) == set(tasks)
    assert all("rougeL" in scores for scores in evaluation["metrics_by_task"].values())
    assert set(evaluation["metrics_by_task"]) == set(tasks)
