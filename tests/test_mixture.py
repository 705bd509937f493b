"""Multi-task mixtures: the sampler's realised proportions against the closed forms for every
sampling option, with and without oversampling; task epochs; curriculum stages; easy-to-hard
order; loss weights; and mixture runs through tunelab.train (per-task logs, exact resume)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest
import torch
from helpers import DATA, interrupt_then_resume
from safetensors.torch import load_file

import tunelab
from tunelab.config import (
    CurriculumStage,
    DataConfig,
    EvalConfig,
    GenerationConfig,
    MixtureConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    TrainTaskConfig,
    load_run_config,
)
from tunelab.config.choices import Order
from tunelab.core.errors import TunelabError
from tunelab.data.batching import MicroBatch
from tunelab.data.inspect import inspect_data
from tunelab.data.mixture import (
    ORDERS,
    MixturePlan,
    TaskExamples,
    TrainingData,
    get_order,
    length_difficulty,
)
from tunelab.data.tokenize import TokenizedExample
from tunelab.data.training_tasks import training_tasks
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models import load_model
from tunelab.runs.run_dir import read_config, write_config
from tunelab.training.data import prepare_data
from tunelab.training.loop import Trainer

SIZES = [4000, 1000, 250]


def fake_tasks(sizes: list[int], weights: list[float | None] | None = None) -> list[TaskExamples]:
    """Tasks of `sizes` examples; example j has j % 7 + 2 tokens (a length to sort by)."""
    weights = weights or [None] * len(sizes)
    tasks = []
    for i, (n, w) in enumerate(zip(sizes, weights, strict=True)):
        train = [TokenizedExample([1] * (j % 7 + 2), [-100] + [1] * (j % 7 + 1), 1) for j in range(n)]
        tasks.append(TaskExamples(f"t{i}", train, [], weight=w, difficulty=length_difficulty(train)))
    return tasks


def realised(plan: MixturePlan, epochs: range) -> dict[int, int]:
    """Examples drawn per task over the given epochs."""
    counts: Counter[int] = Counter()
    for epoch in epochs:
        for micro in plan.epoch_batches(epoch):
            counts[micro.task] += micro.size
    return dict(counts)


def proportions(counts: dict[int, int]) -> list[float]:
    total = sum(counts.values())
    return [counts.get(i, 0) / total for i in range(len(counts))]


def closed_form(sampling: str, sizes: list[int], weights: list[float] | None = None) -> list[float]:
    raw = {"proportional": [float(n) for n in sizes],
           "temperature": [n ** 0.5 for n in sizes],  # T = 2
           "uniform": [1.0] * len(sizes),
           "weights": list(weights or [])}[sampling]
    return [r / sum(raw) for r in raw]


SAMPLINGS = ["proportional", "temperature", "uniform", "weights"]
WEIGHTS = [1.0, 2.0, 5.0]


# --- sampling: realised proportions vs the configured rates ----------------------------------
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_oversampling_realises_the_configured_proportions(sampling: str) -> None:
    config = MixtureConfig(sampling=sampling, temperature=2.0, oversample=True)
    plan = MixturePlan(fake_tasks(SIZES, WEIGHTS), config, batch_size=1, seed=0)
    expected = closed_form(sampling, SIZES, WEIGHTS)
    assert [plan.rates[i] for i in range(3)] == pytest.approx(expected, abs=1e-12)
    counts = realised(plan, range(2))
    assert proportions(counts) == pytest.approx(expected, abs=1e-3)
    assert sum(counts.values()) == 2 * sum(SIZES)  # an epoch is as long as all the data
    # Task epochs: examples drawn / task size; a small task with a large share repeats.
    epochs = [counts[i] / n for i, n in enumerate(SIZES)]
    assert epochs == pytest.approx([2 * sum(SIZES) * r / n for r, n in zip(expected, SIZES, strict=True)], abs=0.01)
    if sampling != "proportional":
        assert epochs[2] > 2 > epochs[0]  # 2 mixture epochs: small task repeats, large one less


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_without_oversampling_rates_hold_until_a_task_runs_out(sampling: str) -> None:
    sizes = [10 * n for n in SIZES]
    config = MixtureConfig(sampling=sampling, temperature=2.0, oversample=False)
    plan = MixturePlan(fake_tasks(sizes, WEIGHTS), config, batch_size=1, seed=0)
    batches = plan.epoch_batches(0)
    # A full epoch uses every example of every task exactly once: proportions = sizes.
    per_task = [[i for m in batches if m.task == t for i in m.indices] for t in range(3)]
    assert [sorted(ix) for ix in per_task] == [list(range(n)) for n in sizes]
    # Until a task runs out (expected after min n_i / r_i draws), draws follow the rates...
    expected = closed_form(sampling, sizes, WEIGHTS)
    runs_out = min(n / r for n, r in zip(sizes, expected, strict=True))
    prefix = Counter(m.task for m in batches[:int(runs_out / 2)])
    assert proportions(dict(prefix)) == pytest.approx(expected, abs=0.03)
    # ...and a task that ran out drops out while the rest renormalise.
    first_out = min(max(k for k, m in enumerate(batches) if m.task == t) for t in range(3))
    assert batches[first_out].task not in {m.task for m in batches[first_out + 1:]}


def test_examples_cap_limits_rates_and_epochs_and_continues_the_stream() -> None:
    config = MixtureConfig(sampling="proportional", cap=500, oversample=False)
    plan = MixturePlan(fake_tasks(SIZES), config, batch_size=8, seed=3)
    counts = realised(plan, range(1))
    assert [counts[i] for i in range(3)] == [500, 500, 250]  # min(n, K): T5's capped rates
    assert [plan.rates[i] for i in range(3)] == pytest.approx([500 / 1250, 500 / 1250, 250 / 1250])
    big = [[i for m in plan.epoch_batches(e) if m.task == 0 for i in m.indices] for e in (0, 1)]
    assert len(set(big[0]) | set(big[1])) == 1000  # the next epoch shows new examples


def test_uniform_oversampling_counts_epochs_per_task() -> None:
    plan = MixturePlan(fake_tasks([100, 10]), MixtureConfig(sampling="uniform", oversample=True),
                       batch_size=1, seed=0)
    counts = realised(plan, range(1))
    assert counts == {0: 55, 1: 55}
    assert (counts[0] / 100, counts[1] / 10) == (0.55, 5.5)
    small = [i for m in plan.epoch_batches(0) if m.task == 1 for i in m.indices]
    assert Counter(small).most_common()[-1][1] >= 5  # every small example repeated 5-6 times


def test_plan_is_deterministic_resumable_and_split_across_processes() -> None:
    config = MixtureConfig(sampling="temperature", oversample=True,
                           stages=[CurriculumStage(["t0"], 3), CurriculumStage(["t0", "t1"])])
    tasks = fake_tasks([40, 12])
    a = MixturePlan(tasks, config, batch_size=4, seed=5, grad_accum=2)
    b = MixturePlan(tasks, config, batch_size=4, seed=5, grad_accum=2)
    assert a.epoch_batches(4) == b.epoch_batches(4)  # epoch 4 cold == after nothing else
    assert [a.epoch_batches(e) for e in range(5)] == [b.epoch_batches(e) for e in range(5)]
    assert MixturePlan(tasks, config, batch_size=4, seed=6).epoch_batches(1) != a.epoch_batches(1)
    ranks = [MixturePlan(tasks, config, batch_size=2, seed=5, grad_accum=2, world=2, rank=r)
             for r in (0, 1)]
    for whole, r0, r1 in zip(a.epoch_batches(2), *(p.epoch_batches(2) for p in ranks), strict=True):
        assert whole.task == r0.task == r1.task and sorted(r0.indices + r1.indices) == sorted(whole.indices)


# --- curriculum ----------------------------------------------------------------------------
def test_curriculum_stage_boundaries_land_on_optimizer_steps() -> None:
    config = MixtureConfig(sampling="uniform", oversample=True,
                           stages=[CurriculumStage(["t0"], 7), CurriculumStage(["t0", "t1"], 5)])
    plan = MixturePlan(fake_tasks([30, 30]), config, batch_size=4, seed=0, grad_accum=3)
    assert plan.default_total_steps(epochs=1, grad_accum=3) == 12
    steps: list[set[int]] = []
    epoch = 0
    while len(steps) < 20:  # group micro-batches into steps exactly as the loop does
        batches = plan.epoch_batches(epoch)
        steps += [{m.task for m in batches[i:i + 3]} for i in range(0, len(batches), 3)]
        epoch += 1
    assert all(s == {0} for s in steps[:7])  # no task-1 batch before stage 2
    assert any(1 in s for s in steps[7:9])
    assert plan.stage_of(0) == 0 and plan.stage_of(epoch) == 1


def test_curriculum_errors_name_the_stage() -> None:
    tasks = fake_tasks([10, 10])
    with pytest.raises(TunelabError, match=r"stages\[1\].tasks: unknown task 'nope'"):
        MixturePlan(tasks, MixtureConfig(stages=[CurriculumStage(["t0"], 2),
                                                 CurriculumStage(["nope"])]), 2, 0)
    with pytest.raises(TunelabError, match=r"stages\[0\].steps=0"):
        MixturePlan(tasks, MixtureConfig(stages=[CurriculumStage(["t0"]), CurriculumStage(["t1"])]), 2, 0)
    with pytest.raises(TunelabError, match="positive `weight`"):
        MixturePlan(tasks, MixtureConfig(sampling="weights"), 2, 0)
    with pytest.raises(TunelabError, match="mixture.sampling 'mixed'"):
        MixturePlan(tasks, MixtureConfig(sampling="mixed"), 2, 0)


def test_easy_to_hard_orders_every_pass_by_the_measure() -> None:
    tasks = fake_tasks([50, 20])
    plan = MixturePlan(tasks, MixtureConfig(order="easy_to_hard", oversample=True), batch_size=5, seed=1)
    for epoch in range(3):
        for t, task in enumerate(tasks):
            lengths = [len(task.train[i].input_ids)
                       for m in plan.epoch_batches(epoch) if m.task == t for i in m.indices]
            passes = [lengths[k:k + len(task.train)] for k in range(0, len(lengths), len(task.train))]
            assert all(p == sorted(p) for p in passes), (epoch, t)


def test_each_order_is_a_registered_object_that_decides_itself() -> None:
    assert set(ORDERS) == set(get_args(Order))
    assert get_order("easy_to_hard").needs_difficulty and not get_order("random").needs_difficulty
    tasks = fake_tasks([6, 4])
    tasks[1].difficulty = None
    MixturePlan(tasks, MixtureConfig(order="random"), batch_size=2, seed=0)
    with pytest.raises(TunelabError, match="mixture.order=easy_to_hard: a task has no difficulty"):
        MixturePlan(tasks, MixtureConfig(order="easy_to_hard"), batch_size=2, seed=0)


# --- config --------------------------------------------------------------------------------
MIXTURE_YAML = """
tasks:
  - name: sentiment
    data: {source: reviews.jsonl, fields: {input: text, output: label}}
    eval: {metrics: [classification], labels: [positive, negative]}
    loss_weight: 2.0
  - name: qa
    data: {source: alpaca.jsonl}
    held_out: true
mixture:
  sampling: temperature
  temperature: 3
  oversample: true
  stages: [{tasks: [sentiment], steps: 10}, {tasks: [sentiment, qa]}]
method: {name: lora}
"""


def test_mixture_config_reads_writes_and_names_bad_keys(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(MIXTURE_YAML)
    config = load_run_config(path)
    assert isinstance(config.tasks[0], TrainTaskConfig) and config.tasks[0].loss_weight == 2.0
    assert config.tasks[1].held_out and config.mixture.stages[0] == CurriculumStage(["sentiment"], 10)
    assert config.is_mixture and not RunConfig().is_mixture
    write_config(config, tmp_path / "run")
    assert read_config(tmp_path / "run") == config
    shipped = load_run_config(Path(tunelab.__file__).parent / "configs" / "flan_natural_instructions.yaml")
    assert shipped.mixture.builtin.name == "natural_instructions" and shipped.is_mixture
    path.write_text(MIXTURE_YAML.replace("loss_weight", "los_weight"))
    with pytest.raises(TunelabError, match=r"mix\.yaml line 6: tasks\[0\]\.los_weight: unknown option "
                       r"'los_weight'; did you mean 'loss_weight'\?"):
        load_run_config(path)


def test_bad_mixture_options_fail_before_the_run_directory_exists(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(MIXTURE_YAML.replace("temperature: 3", "temperature: 0")
                    + f"output_dir: {tmp_path}\nname: bad\n")
    with pytest.raises(TunelabError, match="mixture.temperature=0"):
        tunelab.train(path)
    assert not (tmp_path / "bad").exists()


# --- loss weights --------------------------------------------------------------------------
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_loss_weights_scale_gradients_and_zero_weight_updates_nothing(tiny_llama: Path,
                                                                      tmp_path: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    examples = [TokenizedExample([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9], 2)] * 4
    tasks = [TaskExamples(name, examples, [], loss_weight=w)
             for name, w in (("one", 1.0), ("two", 2.0), ("zero", 0.0))]
    method = get_method("lora")
    model = method.apply(lm.model, parse_options(method, {"name": "lora", "r": 4, "dropout": 0.0}),
                         lm.kind)
    trainer = Trainer(model, TrainConfig(batch_size=2, lr=1e-2, max_grad_norm=0, warmup_ratio=0),
                      TrainingData(tasks, lm.tokenizer.pad_token_id, MixtureConfig()), tmp_path)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    captured: list[list[torch.Tensor | None]] = []
    trainer.optimizer.step = lambda *a, **k: captured.append(  # type: ignore[method-assign]
        [None if p.grad is None else p.grad.clone() for p in params])
    for task in range(3):
        trainer._optimizer_step([MicroBatch(task, [0, 1], 2)])
    one, two, zero = captured
    assert any(g is not None and g.abs().sum() > 0 for g in one)
    for g1, g2 in zip(one, two, strict=True):
        if g1 is not None:
            assert torch.allclose(2 * g1, g2, rtol=1e-5, atol=1e-8)
    assert all(g is None for g in zero)  # a weight-0 task's examples alone: no gradient at all


# --- runs through tunelab.train --------------------------------------------------------------
def mixture_run(model_dir: Path, out: Path, name: str, mixture: MixtureConfig | None = None,
                **train: object) -> RunConfig:
    settings: dict = dict(max_steps=6, batch_size=2, lr=1e-2, eval_every=3, log_every=1,
                          warmup_ratio=0.0)
    settings.update(train)
    generation = GenerationConfig(max_new_tokens=3, batch_size=4)
    sentiment = TrainTaskConfig(
        name="sentiment",
        data=DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                        instruction="Classify the sentiment.", template="chat", test_size=4,
                        validation_size=4, max_length=96,
                        # the completion task's reviews are these sentences too: its test
                        # items are in this task's training data (the check finds them)
                        allow_leakage=True),
        eval=EvalConfig(metrics=["classification"], labels=["positive", "negative"],
                        generation=generation))
    completion = TrainTaskConfig(
        name="completion",
        data=DataConfig(source=str(DATA / "prompt_completion.jsonl"), template="alpaca",
                        test_size=2, validation_size=2, max_length=96),
        eval=EvalConfig(metrics=["exact_match"], generation=generation))
    return RunConfig(
        name=name, output_dir=str(out), model=ModelConfig(name=str(model_dir)),
        method={"name": "lora", "r": 4, "dropout": 0.1}, train=TrainConfig(**settings),
        tasks=[sentiment, completion], mixture=mixture or MixtureConfig(eval_limit=3))


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_mixture_run_logs_per_task_loss_and_metric(tiny_llama: Path, tmp_path: Path) -> None:
    mixture = MixtureConfig(sampling="uniform", oversample=True, eval_limit=3)
    result = tunelab.train(mixture_run(tiny_llama, tmp_path, "mix", mixture))
    evals = [r for r in _log(result.run_dir) if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for record in evals:
        assert set(record["val_loss_by_task"]) == {"sentiment", "completion"}
        assert all(v > 0 for v in record["val_loss_by_task"].values())
        assert "accuracy" in record["metrics_by_task"]["sentiment"]
        assert "exact_match" in record["metrics_by_task"]["completion"]
    mix = result.summary["mixture"]["tasks"]
    assert mix["sentiment"]["train_examples"] == 32 and mix["completion"]["train_examples"] == 8
    seen = {name: row["examples_seen"] for name, row in mix.items()}
    assert sum(seen.values()) == 6 * 2  # 6 steps of one 2-example micro-batch
    assert mix["completion"]["epochs"] == pytest.approx(seen["completion"] / 8)
    assert mix["sentiment"]["rate"] == mix["completion"]["rate"] == 0.5
    assert mix["sentiment"]["best_val_loss"] is not None
    for name in ("sentiment", "completion"):
        assert (result.run_dir / "eval" / "fine-tuned" / name / "metrics.json").is_file()
    assert set(result.task_evaluations) == {"sentiment", "completion"}
    leaked = result.summary["data_check"]["leaked"]  # across tasks: near duplicates
    assert leaked["completion/test in sentiment/train"] == 2
    assert result.summary["test_scores"]["sentiment"]["accuracy"] >= 0


def test_zero_loss_weight_stage_leaves_the_adapter_untouched(tiny_llama: Path, tmp_path: Path) -> None:
    mixture = MixtureConfig(eval_limit=0, stages=[CurriculumStage(["completion"], 2),
                                                  CurriculumStage(["sentiment", "completion"])])
    config = mixture_run(tiny_llama, tmp_path, "zero", mixture, max_steps=2, eval_every=0)
    config.tasks[1].loss_weight = 0.0
    result = tunelab.train(config, evaluate_after=False)
    lora_b = [t for name, t in _adapter(result.run_dir).items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(t) == 0 for t in lora_b)  # LoRA B starts at zero
    assert result.summary["mixture"]["tasks"]["completion"]["examples_seen"] == 4
    assert result.summary["mixture"]["tasks"]["sentiment"]["examples_seen"] == 0
    # The same stage at loss weight 1 does move the adapter: the zero above is the weight's.
    config.name, config.tasks[1].loss_weight = "one", 1.0
    trained = tunelab.train(config, evaluate_after=False)
    lora_b = [t for name, t in _adapter(trained.run_dir).items() if "lora_B" in name]
    assert len(lora_b) == 2 * 7 and all(torch.count_nonzero(t) > 0 for t in lora_b)  # layers x linears


def test_mixture_resume_reaches_the_same_result(tiny_llama: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    mixture = MixtureConfig(sampling="temperature", oversample=True, eval_limit=1,
                            stages=[CurriculumStage(["sentiment"], 3),
                                    CurriculumStage(["sentiment", "completion"])])
    settings = dict(max_steps=6, eval_every=3, save_every=2, grad_accum=2)
    straight = tunelab.train(mixture_run(tiny_llama, tmp_path, "straight", mixture, **settings),
                             evaluate_after=False)
    config = mixture_run(tiny_llama, tmp_path, "resumed", mixture, **settings)
    resumed = interrupt_then_resume(config, monkeypatch)
    ws, wr = _adapter(straight.run_dir), _adapter(resumed.run_dir)
    assert len(ws) == 2 * 7 * 2 and set(ws) == set(wr)  # layers x linear layers x (A, B)
    assert all(torch.count_nonzero(ws[k]) > 0 for k in ws if "lora_B" in k)  # trained (B starts at 0)
    assert all(torch.allclose(ws[k], wr[k], atol=1e-7, rtol=0) for k in ws)
    keys = ("loss", "examples_by_task", "stage", "val_loss_by_task", "metrics_by_task")
    strip = [[{k: r.get(k) for k in keys} for r in _log(run.run_dir)] for run in (straight, resumed)]
    assert strip[0] == strip[1]
    assert (straight.summary["mixture"]["tasks"]["completion"]["examples_seen"]
            == resumed.summary["mixture"]["tasks"]["completion"]["examples_seen"] > 0)
    stages = [r["stage"] for r in _log(straight.run_dir) if "loss" in r]
    assert stages == [0, 0, 0, 1, 1, 1]


def test_easy_to_hard_by_base_model_loss(tiny_llama: Path, tmp_path: Path) -> None:
    config = mixture_run(tiny_llama, tmp_path, "hard", MixtureConfig(order="easy_to_hard",
                                                                     measure="loss", eval_limit=0))
    lm = load_model(config.model)
    data = prepare_data(config, lm, training_tasks(config)).data
    task = data.tasks[1]
    # The measure is the base model's mean NLL per completion token: transformers' own loss of
    # each example alone (labels -100 on the prompt), not tunelab's batched computation.
    with torch.no_grad():
        expected = [float(lm.model(input_ids=torch.tensor([ex.input_ids]),
                                   labels=torch.tensor([ex.labels])).loss) for ex in task.train]
    assert len(expected) == 8 and task.difficulty == pytest.approx(expected, rel=1e-4)
    assert data.mixture is not None
    plan = MixturePlan(data.tasks, data.mixture, batch_size=2, seed=0)
    first_pass = [task.difficulty[i] for i in plan.stream(1, 0, len(task.train))]
    assert first_pass == sorted(first_pass) and len(set(first_pass)) > 1


def test_data_inspect_shows_every_task_with_its_own_template(tiny_llama: Path, tmp_path: Path) -> None:
    config = mixture_run(tiny_llama, tmp_path, "inspect")
    config.tasks[1].loss_weight = 0.5
    text = inspect_data(config, count=1)
    sentiment, completion = text.split("=== task completion")
    assert sentiment.startswith("=== task sentiment (loss weight 1)")
    assert "template: chat" in sentiment and "<|im_start|>" in sentiment
    assert completion.startswith(" (loss weight 0.5)")
    assert "template: alpaca" in completion and "### Response:" in completion
    assert "⟦" in sentiment and "⟦" in completion


def test_one_task_without_training_examples_has_no_plan() -> None:
    data = TrainingData([TaskExamples("only", [], [])], pad_id=0)
    assert not data.per_task
    with pytest.raises(TunelabError, match="the train split is empty"):
        data.plan(batch_size=2, seed=0)
    examples = [TokenizedExample([1, 2, 3], [-100, 2, 3], 1)] * 5
    plan = TrainingData([TaskExamples("only", examples, [])], pad_id=0).plan(batch_size=2, seed=0)
    assert sorted(i for b in plan.epoch_batches(0) for i in b.indices) == [0, 1, 2, 3, 4]
