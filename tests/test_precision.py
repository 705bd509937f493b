"""train.precision (autocast through accelerate, float32 weights) and
train.gradient_checkpointing (every method but prefix tuning, which is refused in one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_run_config
from safetensors.torch import load_file

import tunelab
from tunelab.core.errors import TunelabError

METHODS = [{"name": "lora", "r": 4}, {"name": "prompt", "num_virtual_tokens": 4},
           {"name": "prefix", "num_virtual_tokens": 4},
           {"name": "ia3"}, {"name": "bitfit"}, {"name": "adapter"}, {"name": "full"}]


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run_dir / "train_log.jsonl").read_text()
                                   .splitlines()) if "loss" in r]


@pytest.mark.parametrize("method", METHODS, ids=[m["name"] for m in METHODS])
def test_gradient_checkpointing_trains_the_same(method: dict, tiny_llama: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tunelab.training import loop
    enabled = []
    real = loop.enable_gradient_checkpointing

    def spy(model: torch.nn.Module) -> None:
        real(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        enabled.append(base.is_gradient_checkpointing)

    monkeypatch.setattr(loop, "enable_gradient_checkpointing", spy)
    runs = {}
    for on in (False, True):
        config = tiny_run_config(tiny_llama, tmp_path, f"gc-{on}", method=dict(method),
                                 max_steps=4, eval_every=0)
        config.train.gradient_checkpointing = on
        runs[on] = tunelab.train(config, evaluate_after=False).run_dir
    assert enabled == [True]  # it was on in the second run, and only there
    plain, recomputed = losses(runs[False]), losses(runs[True])
    assert len(plain) == 4 and plain[-1] != plain[0]  # it trained
    assert recomputed == pytest.approx(plain, rel=1e-6, abs=1e-7)


def test_bf16_autocast_keeps_float32_weights_and_follows_the_fp32_curve(tiny_llama: Path,
                                                                        tmp_path: Path) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        config = tiny_run_config(tiny_llama, tmp_path, precision, max_steps=6, eval_every=0,
                                 method={"name": "full"})
        config.train.precision = precision
        runs[precision] = tunelab.train(config, evaluate_after=False).run_dir
    fp32, bf16 = losses(runs["fp32"]), losses(runs["bf16"])
    # bf16 keeps 8 bits of mantissa: the per-token loss (~6) within 2% of fp32 at every step
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert bf16 != fp32  # autocast was on: the numbers are not float32's
    weights = load_file(str(runs["bf16"] / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}


def test_fp16_on_a_cpu_is_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: fp16 runs")
    config = tiny_run_config(tiny_llama, tmp_path, "fp16")
    config.train.precision = "fp16"
    with pytest.raises(TunelabError, match="train.precision fp16: needs a GPU; use bf16"):
        tunelab.train(config, evaluate_after=False)
