"""A token prefix shared by the prompts runs once, and generation gives the same tokens as
whole, left-padded prompts: for every causal family and for adapters on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from tests.conftest import build_tokenizer
from tunelab.config import GenerationConfig, ModelConfig
from tunelab.eval import generation
from tunelab.eval.generation import generate
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models import load_model
from tunelab.models.kinds import get_kind

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {  # Any: each config's own options
    "llama": ("LlamaConfig", "LlamaForCausalLM", SMALL),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", SMALL),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**SMALL, "sliding_window": 128}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**SMALL, "pad_token_id": 0}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", SMALL),
    "opt": ("OPTConfig", "OPTForCausalLM",
            {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "max_position_embeddings": 256, "word_embed_proj_dim": 32}),
}

SHOTS = ("a gorgeous , witty movie -> positive\n\nthe story is dull and tired -> negative\n\n"
         "an engrossing portrait of a family -> positive\n\n")
ITEMS = ["a dull movie ->", "it is witty ->", "the portrait of the story is tired and dull ->",
         "gorgeous ->", "a family movie that is also witty and engrossing ->"]


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Any:  # Any: the factory below
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            path = tmp_path_factory.mktemp(family)
            tokenizer = build_tokenizer(path)
            config_class, model_class, options = FAMILIES[family]
            config = getattr(transformers, config_class)(
                vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id,
                **{"pad_token_id": tokenizer.pad_token_id, **options})
            torch.manual_seed(0)
            model = getattr(transformers, model_class)(config)
            with torch.no_grad():  # sharp logits: greedy choices far from ties
                for parameter in model.parameters():
                    parameter.mul_(4.0)
            model.save_pretrained(path)
            built[family] = path
        return built[family]
    return build


def _prompts(tokenizer: Any) -> list[list[int]]:  # Any: a transformers tokenizer
    return [tokenizer(SHOTS + item).input_ids for item in ITEMS]


def _both(model: torch.nn.Module, tokenizer: Any, prompts: list[list[int]],  # Any: tokenizer
          monkeypatch: pytest.MonkeyPatch, batch_size: int = 3) -> tuple[list[str], list[str], int]:
    """(shared-prefix outputs, whole-prompt outputs, prefix passes run)."""
    config = GenerationConfig(max_new_tokens=8, batch_size=batch_size)
    passes: list[int] = []
    real = generation.SharedPrefix._cache_of

    def counted(self: generation.SharedPrefix, prefix: tuple[int, ...]) -> object:
        passes.append(len(prefix))
        return real(self, prefix)
    monkeypatch.setattr(generation.SharedPrefix, "_cache_of", counted)
    shared = generate(model, tokenizer, prompts, config, strip=False, share_prefix=True)
    whole = generate(model, tokenizer, prompts, config, strip=False, share_prefix=False)
    return shared, whole, len(passes)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_shared_prefix_generates_the_same_tokens_as_whole_prompts(
        family: str, tiny_family: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family(family))))
    prompts = _prompts(lm.tokenizer)
    shared, whole, passes = _both(lm.model, lm.tokenizer, prompts, monkeypatch)
    assert passes == 2  # the shots ran as a prefix for each of the two batches
    assert shared == whole
    # Not an empty comparison: the model wrote text, and not the same text for every prompt.
    assert all(shared) and len(set(shared)) > 1


def test_a_shared_prefix_runs_once_for_all_batches_and_saves_its_tokens(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # Any: factory
    lm = load_model(ModelConfig(name=str(tiny_family("llama"))))
    prompts = _prompts(lm.tokenizer)
    shared_length = generation.shared_prefix(prompts)
    assert shared_length >= len(lm.tokenizer(SHOTS).input_ids) - 1
    config = GenerationConfig(max_new_tokens=4, batch_size=2)
    calls: list[int] = []
    forward = lm.model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:  # Any: the model's own signature
        calls.append(int(kwargs["input_ids"].shape[1]))
        return forward(*args, **kwargs)
    monkeypatch.setattr(lm.model, "forward", spy)
    generate(lm.model, lm.tokenizer, prompts, config, share_prefix=True)
    # One prefix pass; every batch's first pass then reads only the suffixes.
    assert calls.count(shared_length) == 1
    calls.remove(shared_length)
    assert max(calls) <= max(len(p) for p in prompts) - shared_length


def test_lora_adapter_shares_the_prefix_and_prompt_tuning_runs_whole_prompts(
        tiny_family: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # Any: factory
    path = tiny_family("llama")
    for method_name, options, shares in (
            ("lora", {"r": 4, "alpha": 8, "target_modules": "all-linear"}, True),
            ("prompt", {"num_virtual_tokens": 4}, False)):
        lm = load_model(ModelConfig(name=str(path)))
        method = get_method(method_name)
        model = method.apply(lm.model, parse_options(method, options), get_kind("causal"))
        torch.manual_seed(1)
        with torch.no_grad():  # the adapter really changes the model
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0, 0.5)
        prompts = _prompts(lm.tokenizer)
        shared, whole, passes = _both(model, lm.tokenizer, prompts, monkeypatch)
        assert shared == whole and all(shared)
        assert (passes == 2) is shares, method_name
        base = generate(lm.model, lm.tokenizer, prompts, GenerationConfig(max_new_tokens=8),
                        strip=False)
        if shares:  # LoRA's weights are injected into lm.model itself: compare with them off
            with model.disable_adapter():
                base = generate(model, lm.tokenizer, prompts, GenerationConfig(max_new_tokens=8),
                                strip=False)
        assert base != shared  # the adapter's outputs, not the base model's
