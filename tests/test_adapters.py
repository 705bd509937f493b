"""Several adapters on one base: each request gets its adapter; the base stays available."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_run_config

import tunelab
from tunelab.config import GenerationConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.generation import generate
from tunelab.runs.adapter_set import AdapterSet
from tunelab.runs.run_dir import load_run_model


def test_switch_adapters_without_reloading_the_base(tiny_llama: Path, tmp_path: Path) -> None:
    a = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "a", max_steps=3), evaluate_after=False)
    b = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "b", max_steps=3, lr=3e-2, seed=5),
                      evaluate_after=False)
    bank = AdapterSet.from_runs({"a": a.run_dir, "b": b.run_dir})
    base_module = bank.base.model
    ids = torch.tensor([[5, 17, 40, 99, 3]])
    with torch.no_grad():
        expected = {name: load_run_model(run).model(input_ids=ids).logits
                    for name, run in (("a", a.run_dir), ("b", b.run_dir))}
        plain = tunelab.models.load_model(tiny_run_config(tiny_llama, tmp_path).model).model
        expected[None] = plain(input_ids=ids).logits
        for name in ("a", "b", None, "a"):
            with bank.use(name) as model:
                assert torch.allclose(model(input_ids=ids).logits, expected[name], atol=1e-6)
    assert not torch.allclose(expected["a"], expected["b"])
    assert bank.model.get_base_model() is base_module  # one base module serves every adapter
    prompt = [[5, 17, 40]]
    with bank.use("b") as model:
        out = generate(model, bank.base.tokenizer, prompt, GenerationConfig(max_new_tokens=3))
    single = load_run_model(b.run_dir)
    assert out == generate(single.model, single.tokenizer, prompt, GenerationConfig(max_new_tokens=3))
    with pytest.raises(TunelabError, match="not loaded"):
        with bank.use("c"):
            pass


def test_non_peft_methods_are_refused_clearly(tiny_llama: Path, tmp_path: Path) -> None:
    full = tunelab.train(tiny_run_config(tiny_llama, tmp_path, "f", method={"name": "full"},
                                         max_steps=1, lr=1e-4), evaluate_after=False)
    with pytest.raises(TunelabError, match="cannot share a base"):
        AdapterSet.from_runs({"f": full.run_dir})
