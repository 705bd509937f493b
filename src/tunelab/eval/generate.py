"""Batched generation: left padding, length-sorted batches, greedy or sampling, stop at EOS
or at stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tunelab.config import GenerationConfig


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop string."""
    cut = len(text)
    for stop in stops:
        if stop and (at := text.find(stop)) != -1:
            cut = min(cut, at)
    return text[:cut]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [batch, longest], padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(list(prompt))
            mask[row, width - len(prompt):] = 1
    return ids, mask


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    desc: str = "generate",
) -> list[str]:
    """Generate a completion for each prompt (token ids), returned in the input order."""
    model.eval()
    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch (little padding) and memory peaks early.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra: dict[str, Any] = {}
    if config.do_sample:
        extra.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
    else:
        extra.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if config.stop:
        extra.update(stop_strings=list(config.stop), tokenizer=tokenizer)
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            ids, mask = left_pad([prompts[i] for i in rows], pad_id)
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **extra,
            )
            new_tokens = generated[:, ids.shape[1]:]
            for row, tokens in zip(rows, new_tokens, strict=True):
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[row] = cut_at_stop(text, config.stop).strip()
            bar.update(len(rows))
    return outputs
