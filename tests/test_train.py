"""The training loop on a tiny model: learning, reproducibility, exact resume, atomic checkpoints,
token-weighted gradient accumulation, early stopping, and the saved formats."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import interrupt_then_resume, tiny_run_config
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import tunelab
from tunelab.config import RunConfig
from tunelab.core.errors import TunelabError
from tunelab.runs.run_dir import load_run_model
from tunelab.training import checkpoint as checkpoint_module


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


LORA_TENSORS = 2 * 7 * 2  # layers x adapted linear layers (q, k, v, o, gate, up, down) x (A, B)


def _untrained(config: RunConfig) -> dict[str, torch.Tensor]:
    """The adapter a run starts from: the same run (same seed, same initialisation) at lr 0."""
    config = copy.deepcopy(config)
    config.name += "-untrained"
    config.train.lr = 0.0
    return _weights(tunelab.train(config, evaluate_after=False).run_dir)


def _assert_moved(trained: dict[str, torch.Tensor], initial: dict[str, torch.Tensor],
                  margin: float) -> None:
    """Every trained tensor left its initial value by more than `margin` (max abs change)."""
    assert trained and set(trained) == set(initial)
    moved = {k: float((trained[k] - initial[k]).abs().max()) for k in trained}
    assert min(moved.values()) > margin, sorted(moved.items(), key=lambda kv: kv[1])[:3]


def test_lora_training_lowers_loss_and_writes_a_run_dir(tiny_llama: Path, tmp_path: Path) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, max_steps=12, eval_every=4)
    result = tunelab.train(config)
    log = _log(result.run_dir)
    losses = [r["loss"] for r in log if "loss" in r]
    val = [r["val_loss"] for r in log if "val_loss" in r]
    assert losses[-1] < losses[0] and min(val) < val[0]
    assert all(r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in log if "loss" in r)
    assert {"lr"} <= set(log[0])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["size_on_disk_bytes"] > 0 and summary["best_step"] in (4, 8, 12)
    for name in ("config.yaml", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                 "eval/fine-tuned/metrics.json", "eval/fine-tuned/predictions.jsonl", "tokenizer"):
        assert (result.run_dir / name).exists(), name
    assert result.evaluation is not None and result.evaluation.n == 8
    assert set(result.evaluation.scores) >= {"accuracy", "f1_macro", "perplexity"}


def test_lora_trainable_count_matches_hand_calculation(tiny_llama: Path, tmp_path: Path) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, max_steps=1, eval_every=0)
    result = tunelab.train(config, evaluate_after=False)
    r, hidden, kv, inter, layers = 4, 16, 8, 32, 2  # kv = 1 head x head_dim 8
    per_layer = (r * (hidden + hidden) * 2      # q_proj, o_proj
                 + r * (hidden + kv) * 2        # k_proj, v_proj
                 + r * (hidden + inter) * 3)    # gate, up, down
    assert result.summary["trainable_parameters"] == per_layer * layers


def test_same_seed_same_weights(tiny_llama: Path, tmp_path: Path) -> None:
    a = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "a"), evaluate_after=False)
    b = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "b"), evaluate_after=False)
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    # Both hold every LoRA tensor, trained: each differs from the start (where the adapter is
    # the identity, B = 0: the base model) by far more than float noise.
    assert len(wa) == LORA_TENSORS and set(wa) == set(wb)
    assert all(".lora_A." in k or ".lora_B." in k for k in wa)
    _assert_moved(wa, _untrained(tiny_run_config(tiny_llama, tmp_path, "a")), margin=1e-3)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_reaches_the_same_result(tiny_llama: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    straight = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "straight", max_steps=8,
                                             eval_every=3, save_every=2), evaluate_after=False)
    # Interrupt a second run right after its step-4 checkpoint, then resume it.
    config = tiny_run_config(tiny_llama, tmp_path, "resumed", max_steps=8, eval_every=3, save_every=2)
    resumed = interrupt_then_resume(config, monkeypatch)
    ws, wr = _weights(straight.run_dir), _weights(resumed.run_dir)
    assert len(ws) == LORA_TENSORS and set(ws) == set(wr)
    assert all(torch.count_nonzero(ws[k]) > 0 for k in ws if ".lora_B." in k)  # trained (B starts at 0)
    assert all(torch.allclose(ws[k], wr[k], atol=1e-7, rtol=0) for k in ws)
    losses = [r.get("loss") for r in _log(straight.run_dir)]
    assert sum(loss is not None for loss in losses) == 8
    assert losses == [r.get("loss") for r in _log(resumed.run_dir)]


def test_a_crash_mid_save_keeps_the_previous_checkpoint(tiny_llama: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, "crash", max_steps=4, eval_every=0, save_every=2)
    real_save_file = checkpoint_module.save_file
    calls = {"n": 0}

    def failing_save_file(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-4 checkpoint dies half-written
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")
        real_save_file(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save_file)
    with pytest.raises(OSError):
        tunelab.train(config, evaluate_after=False)
    last = config.run_dir / "checkpoints" / "last"
    state = json.loads((last / "loop_state.json").read_text())
    assert state["step"] == 2
    assert load_file(str(last / "trainable.safetensors"))  # intact and readable
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")]


def test_gradient_accumulation_weights_tokens_not_micro_batches(tiny_llama: Path, tmp_path: Path) -> None:
    no_dropout = {"name": "lora", "r": 4, "dropout": 0.0}
    config = tiny_run_config(tiny_llama, tmp_path, "one", method=no_dropout, max_steps=2,
                             batch_size=4, grad_accum=1, eval_every=0)
    one = tunelab.train(config, evaluate_after=False)
    acc = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "acc", method=no_dropout, max_steps=2,
                                        batch_size=2, grad_accum=2, eval_every=0), evaluate_after=False)
    w1, w2 = _weights(one.run_dir), _weights(acc.run_dir)
    # Both runs trained: every tensor moved 100x further than the tolerance they agree within
    # (measured: at least 3.7e-3 from the start, at most 1e-7 apart).
    assert len(w1) == LORA_TENSORS and set(w1) == set(w2)
    _assert_moved(w1, _untrained(config), margin=1e-3)
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0) for k in w1)


def test_early_stopping_and_best_checkpoint(tiny_llama: Path, tmp_path: Path) -> None:
    # A huge learning rate makes validation loss worse after the first evaluation.
    config = tiny_run_config(tiny_llama, tmp_path, "early", max_steps=30, eval_every=1, lr=3.0,
                             early_stopping_patience=2)
    result = tunelab.train(config, evaluate_after=False)
    assert result.summary["stopped_early"] and result.summary["steps"] < 30
    val = [r for r in _log(result.run_dir) if "val_loss" in r]
    best = min(val, key=lambda r: r["val_loss"])
    assert result.summary["best_step"] == best["step"]
    assert result.summary["best_step"] < result.summary["steps"]  # training went on after the best
    saved = _weights(result.run_dir)
    best_weights = load_file(str(result.run_dir / "checkpoints" / "best" / "trainable.safetensors"))
    last_weights = load_file(str(result.run_dir / "checkpoints" / "last" / "trainable.safetensors"))
    assert len(saved) == len(best_weights) == len(last_weights) == LORA_TENSORS
    for (_, a), (_, b) in zip(sorted(saved.items()), sorted(best_weights.items()), strict=True):
        assert torch.equal(a, b)
    # The saved adapter is the restored best, not simply where training stopped.
    assert not all(torch.equal(a, b) for (_, a), (_, b) in
                   zip(sorted(saved.items()), sorted(last_weights.items()), strict=True))


def test_full_run_saves_a_loadable_hf_model(tiny_llama: Path, tmp_path: Path) -> None:
    result = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "full", method={"name": "full"},
                                           max_steps=2, lr=1e-3), evaluate_after=False)
    model_dir = result.run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    AutoTokenizer.from_pretrained(model_dir)
    assert result.summary["trainable_percent"] == 100.0
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed


def test_fused_adamw_updates_as_the_per_tensor_loop(tiny_llama: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU the loop takes torch's fused AdamW (one kernel over all tensors); a full
    fine-tune with it ends where the per-tensor loop ends, to float32 rounding, and both moved
    the weights far more than they differ."""
    from tunelab.training import loop

    used: list[bool] = []
    adamw = torch.optim.AdamW

    def spy(*args, **kwargs):
        used.append(kwargs.get("fused"))
        return adamw(*args, **kwargs)

    monkeypatch.setattr(loop.torch.optim, "AdamW", spy)
    weights = {}
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(loop, "fused_adamw_runs_on", lambda params: False)
        result = tunelab.train(tiny_run_config(tiny_llama, tmp_path, f"fused-{fused}",
                                               method={"name": "full"}, max_steps=4, lr=1e-3),
                               evaluate_after=False)
        weights[fused] = load_file(str(result.run_dir / "model" / "model.safetensors"))
    assert used == [True, False]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).state_dict()
    moved = max(float((weights[True][k] - base[k]).abs().max()) for k in weights[True])
    worst = max(float((weights[True][k] - weights[False][k]).abs().max()) for k in weights[True])
    assert moved > 1e-4 and worst <= 1e-6, (moved, worst)


def test_lora_adapter_loads_in_peft_with_identical_logits(tiny_llama: Path, tmp_path: Path) -> None:
    result = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "peft", max_steps=3), evaluate_after=False)
    ours = load_run_model(result.run_dir).model
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                       str(result.run_dir / "adapter")).eval()
    ids = torch.tensor([[5, 17, 40, 99, 3]])
    assert torch.equal(ours(input_ids=ids).logits, theirs(input_ids=ids).logits)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert not torch.equal(base(input_ids=ids).logits, ours(input_ids=ids).logits)


def test_existing_run_is_never_overwritten(tiny_llama: Path, tmp_path: Path) -> None:
    config = tiny_run_config(tiny_llama, tmp_path, "once", max_steps=1, eval_every=0)
    tunelab.train(config, evaluate_after=False)
    before = (config.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(TunelabError, match="already holds a run; pass --resume"):
        tunelab.train(config, evaluate_after=False)
    assert (config.run_dir / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_report_to_tensorboard_and_mlflow_get_the_train_log_scalars(tiny_llama: Path,
                                                                    tmp_path: Path,
                                                                    monkeypatch) -> None:
    """train.report_to: both trackers hold every scalar of train_log.jsonl at its step, read
    back with TensorBoard's own event reader and MLflow's client on the file store."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    config = tiny_run_config(tiny_llama, tmp_path, max_steps=6, eval_every=3)
    config.train.report_to = ["tensorboard", "mlflow"]
    config.train.log_every = 2
    run_dir = tunelab.train(config, evaluate_after=False).run_dir
    log = _log(run_dir)
    expected = {(name, r["step"]): float(r[name]) for r in log
                for name in ("loss", "lr", "val_loss", "tokens_per_s") if name in r}
    assert {n for n, _ in expected} == {"loss", "lr", "val_loss", "tokens_per_s"}

    events = EventAccumulator(str(run_dir / "tensorboard" / run_dir.name))
    events.Reload()
    board = {(tag, e.step): e.value for tag in events.Tags()["scalars"]
             for e in events.Scalars(tag)}
    for key, value in expected.items():
        assert board[key] == pytest.approx(value, rel=1e-6), key

    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(run_dir.name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["lr"] == str(config.train.lr) and run.info.status == "FINISHED"
    for name in ("loss", "lr", "val_loss"):
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        assert history == {step: pytest.approx(v, rel=1e-9) for (n, step), v in expected.items()
                           if n == name}, name


def test_report_to_names_a_known_installed_tracker() -> None:
    from tunelab.config import TrainConfig
    with pytest.raises(TunelabError, match="train.report_to 'wandb': use any of tensorboard, mlflow"):
        TrainConfig(report_to=["wandb"])


def test_the_config_is_resolved_once_per_run(tiny_llama: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The run resolves its tasks once into a plan (workflows/train.py: plan_run) that every
    step receives: the training tasks once, each task's evaluation task once, its data read
    once, however many steps use them (before: twice, three times and twice)."""
    import tunelab.workflows.train as workflow

    counts = {"training_tasks": 0, "evaluation_task": 0, "read_splits": 0}

    def counted(name: str) -> None:
        real = getattr(workflow, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(workflow, name, wrapper)

    for name in counts:
        counted(name)
    result = tunelab.train(tiny_run_config(tiny_llama, tmp_path, max_steps=2, eval_every=2))
    assert result.evaluation is not None and result.evaluation.n == 8  # evaluated after training
    assert counts == {"training_tasks": 1, "evaluation_task": 1, "read_splits": 1}
