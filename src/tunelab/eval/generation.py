"""Batched generation: left padding (right padding of the encoder input for encoder-decoder
models), length-sorted batches, greedy or sampling, stop at EOS or at stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from tunelab.config import GenerationConfig
from tunelab.models.tokens import decode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


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


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [batch, longest], padded on the right (an encoder's
    input: positions then count from the first real token, as in training)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, :len(prompt)] = 1
    return ids, mask


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    """Whether generate() returns decoder sequences (T5, BART) rather than prompt + continuation."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    desc: str = "generate",
    strip: bool = True,
    hit_limit: list[bool] | None = None,
) -> list[str]:
    """Generate a completion for each prompt (token ids), returned in the input order.

    Prompts are sorted by length so each batch pads little; `strip` trims whitespace around
    each prediction (lm-evaluation-harness wants it kept). For encoder-decoder models the
    prompt is the encoder input (right-padded) and the output holds only the decoder's tokens
    after its start token, so nothing of the prompt is echoed. `hit_limit`, when given, is
    filled with whether each completion ran to max_new_tokens without an end token or a stop
    string (an answer cut off, not finished)."""
    model.eval()
    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch (little padding) and memory peaks early.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    seq2seq = is_encoder_decoder(model)
    pad = right_pad if seq2seq else left_pad
    outputs: list[str] = [""] * len(prompts)
    limited = [False] * len(prompts)
    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra: dict[str, object] = {}
    if config.do_sample:
        extra.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
    else:
        extra.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if config.stop:
        extra.update(stop_strings=list(config.stop), tokenizer=tokenizer)
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            ids, mask = pad([prompts[i] for i in rows], pad_id)
            run: Any = model.generate  # Any: transformers' generate; nn.Module lacks it
            generated = run(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **extra,
            )
            # A decoder's sequences start with its start token; a causal LM's with the prompt.
            new_tokens = generated[:, 1:] if seq2seq else generated[:, ids.shape[1]:]
            ends = {t for t in (tokenizer.eos_token_id, pad_id) if t is not None}
            for row, tokens in zip(rows, new_tokens, strict=True):
                decoded = decode(tokenizer, tokens, skip_special_tokens=True)
                text = cut_at_stop(decoded, config.stop)
                outputs[row] = text.strip() if strip else text
                limited[row] = (len(tokens) >= config.max_new_tokens and text == decoded
                                and int(tokens[-1]) not in ends)
            bar.update(len(rows))
    if hit_limit is not None:
        hit_limit[:] = limited
    return outputs
