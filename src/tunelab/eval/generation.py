"""Batched generation: left padding (right padding of the encoder input for encoder-decoder
models), length-sorted batches, greedy or sampling, stop at EOS or at stop strings.

A token prefix shared by the prompts (fixed few-shot examples, an instruction or preamble, a
chat template's system turn) runs once: its key/value cache is handed to every batch that
starts with it, and only each prompt's own suffix runs after it (`SharedPrefix`). Rows are
[prefix | padding | suffix] with the padding masked, so every token keeps the position and the
attention it has in a left-padded whole prompt: the same tokens come out (tested token for
token). Encoder-decoder models (the encoder reads the prompt both ways) and peft prompt
learning (its virtual tokens own the cache) run whole prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from tunelab.config import GenerationConfig
from tunelab.eval.result_cache import ResultCache, token_bytes, tokenizer_fingerprint
from tunelab.models.cache import (
    cache_argument,
    output_cache,
    select_cache,
    shared_prefix,
    shares_cache,
)
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


class SharedPrefix:
    """Each batch's inputs with the prompts' shared token prefix run once.

    The prefix every prompt starts with (`shared_prefix`, at least MIN_SHARED_PREFIX tokens)
    runs once for the whole call; without one, each batch's own shared prefix runs once for
    that batch. The prefix's cache is copied to every row of the batch (generation appends to
    it), so the prefix costs one row's forward pass however many rows use it."""

    def __init__(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]]) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.whole = shared_prefix(prompts)
        self._last: tuple[tuple[int, ...], object] | None = None  # (prefix, its cache)

    def inputs(self, prompts: Sequence[Sequence[int]], pad_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
        """(input_ids, attention_mask, the prefix's cache under the model's keyword or {})
        of a batch, for `model.generate`."""
        length = self.whole or shared_prefix(prompts)
        if not length:
            ids, mask = left_pad(prompts, pad_id)
            return ids.to(self.device), mask.to(self.device), {}
        prefix = tuple(prompts[0][:length])
        rows = len(prompts)
        own_ids, own_mask = left_pad([p[length:] for p in prompts], pad_id)
        ids = torch.cat([torch.tensor([prefix]).expand(rows, -1), own_ids], dim=1)
        mask = torch.cat([torch.ones((rows, length), dtype=torch.long), own_mask], dim=1)
        cache = select_cache(self.model, self._cache_of(prefix),
                             torch.zeros(rows, dtype=torch.long, device=self.device))
        return ids.to(self.device), mask.to(self.device), {cache_argument(self.model): cache}

    def _cache_of(self, prefix: tuple[int, ...]) -> object:
        if self._last is None or self._last[0] != prefix:
            out = self.model(input_ids=torch.tensor([prefix], device=self.device),
                             use_cache=True)
            self._last = (prefix, output_cache(out))
        return self._last[1]


def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    desc: str = "generate",
    strip: bool = True,
    hit_limit: list[bool] | None = None,
    share_prefix: bool = True,
    results: ResultCache | None = None,
) -> list[str]:
    """Generate a completion for each prompt (token ids), returned in the input order.

    Prompts are sorted by length so each batch pads little; `strip` trims whitespace around
    each prediction (lm-evaluation-harness wants it kept). For encoder-decoder models the
    prompt is the encoder input (right-padded) and the output holds only the decoder's tokens
    after its start token, so nothing of the prompt is echoed. `hit_limit`, when given, is
    filled with whether each completion ran to max_new_tokens without an end token or a stop
    string (an answer cut off, not finished). `share_prefix` runs a shared token prefix once
    wherever the model can take a cache (`SharedPrefix`); False runs whole prompts. With
    `results` (greedy decoding only), a prompt this model already completed under these
    settings is looked up, not run (eval/result_cache.py)."""
    def run(indices: list[int]) -> list[tuple[str, bool]]:
        return _generate([prompts[i] for i in indices], model, tokenizer, config, desc,
                         share_prefix)
    if results is not None and not config.do_sample:
        settings = {"max_new_tokens": config.max_new_tokens, "stop": list(config.stop),
                    "tokenizer": tokenizer_fingerprint(tokenizer)}
        done = [tuple(x) for x in results.through(model, "generate", settings,
                                                   [token_bytes(p) for p in prompts], run)]
    else:
        done = run(list(range(len(prompts))))
    if hit_limit is not None:
        hit_limit[:] = [limited for _, limited in done]
    return [text.strip() if strip else text for text, _ in done]


@torch.no_grad()
def _generate(prompts: Sequence[Sequence[int]], model: torch.nn.Module,
              tokenizer: PreTrainedTokenizerBase, config: GenerationConfig, desc: str,
              share_prefix: bool) -> list[tuple[str, bool]]:
    """(text cut at the stop strings, whether it ran to max_new_tokens unfinished) of each
    prompt, in the input order."""
    model.eval()
    device = next(model.parameters()).device
    # Longest first: similar lengths share a batch (little padding) and memory peaks early.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    seq2seq = is_encoder_decoder(model)
    shared = (SharedPrefix(model, prompts) if share_prefix and not seq2seq and shares_cache(model)
              else None)
    outputs: list[tuple[str, bool]] = [("", False)] * len(prompts)
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
            batch = [prompts[i] for i in rows]
            if shared is not None:
                ids, mask, cached = shared.inputs(batch, pad_id)
            else:
                ids, mask = (right_pad if seq2seq else left_pad)(batch, pad_id)
                ids, mask, cached = ids.to(device), mask.to(device), {}
            run: Any = model.generate  # Any: transformers' generate; nn.Module lacks it
            generated = run(
                input_ids=ids,
                attention_mask=mask,
                **cached,
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
                outputs[row] = (text, len(tokens) >= config.max_new_tokens and text == decoded
                                and int(tokens[-1]) not in ends)
            bar.update(len(rows))
    return outputs
