"""Batched generation with left padding gives what one-at-a-time generation gives."""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.config import GenerationConfig, ModelConfig
from tunelab.eval.generation import cut_at_stop, generate, left_pad
from tunelab.models import load_model


def test_left_padding_layout() -> None:
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_stop_strings_cut_at_the_first() -> None:
    assert cut_at_stop("positive\n\n### Explanation", ["###", "\n\n"]) == "positive"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"


def test_batched_greedy_equals_unbatched(tiny_llama: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    torch.manual_seed(0)
    prompts = [lm.tokenizer(text).input_ids for text in
               ["a gorgeous , witty movie", "dull", "the story is also as unoriginal as they come ."]]
    config = GenerationConfig(max_new_tokens=6, batch_size=3)
    batched = generate(lm.model, lm.tokenizer, prompts, config)
    single = [generate(lm.model, lm.tokenizer, [p], GenerationConfig(max_new_tokens=6, batch_size=1))[0]
              for p in prompts]
    assert batched == single
    assert any(batched)


def test_sampling_is_seeded(tiny_llama: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    prompts = [lm.tokenizer("a gorgeous movie").input_ids] * 3
    config = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, seed=7)
    first = generate(lm.model, lm.tokenizer, prompts, config)
    assert first == generate(lm.model, lm.tokenizer, prompts, config)
    # It really samples: the same prompt three times gives three texts (greedy gives one), and
    # another seed gives other texts.
    assert len(set(first)) == 3
    other = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, seed=8)
    assert generate(lm.model, lm.tokenizer, prompts, other) != first
