"""Prompts run end to end in a few rows: one forward pass, almost no padding.

A batch of prompts of different lengths, left- or right-padded, runs every row to the longest:
at 0 shots 30% of the quickstart's prompt positions in its batches were padding, and a padded position
costs what a real one costs. Here each prompt's tokens (`Segment`) are laid end to end in rows
of about `ROW_TOKENS`, with their own position ids, and a 4-D attention mask lets each token
see only the tokens before it in its own prompt and the stored states its prompt starts from
(a prefix the prompts share, or a kept prompt's states: `models/prompt_caches.py`), each piece
held once per row in the pass's cache. Every token so keeps the position and the attention it
has in its prompt run alone: the same states come out, to float rounding (tests/test_packed.py;
the generated tokens and choice scores equal padded batches', tests/test_generate_prefix.py).

The mask is transformers' custom 4-D mask (passed through as it is): boolean for sdpa, additive
for eager attention; models whose layers attend in a window or through another kernel run
padded batches (`packs`). A batch is packed only where that saves positions (`saves`): prompts
of similar lengths (shots drawn per item) pad little. Greedy generation and multiple choice run
every prompt token packed and read the logits after each prompt (`next_logits`); sampling
leaves each prompt's last token to a pass of its own, one token per row, inside `generate`.
"""

from __future__ import annotations

import heapq
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.models.attention import attention_implementation
from tunelab.models.cache import (
    LayerStates,
    cache_argument,
    laid_out_cache,
    output_cache,
    shares_cache,
    transformers_model,
)
from tunelab.models.logits import defers_projection, projection_skipped
from tunelab.models.pretrained import is_encoder_decoder, model_config

ROW_TOKENS = 256
"""Tokens per packed row (a longer prompt gets a row of its own): the mask makes attention
dense over a row, so rows stay short enough that it costs a few percent of the pass."""

ONE_TOKEN_PASS = 4
"""A pass of one token per row costs about what this many prompt positions per row cost (the
built-in 135M model on a CPU: 16 rows 0.11-0.15 s, a prompt position 1.9-2.2 ms): what a
prompt's last token, run on its own after the packed pass, costs beyond its position."""

@dataclass(frozen=True)
class Segment:
    """Tokens to run at positions `start`.. after stored states: the pieces `prefixes[i]` for i
    in `prefix` together hold positions [0, start) (none: the tokens start the prompt). A
    piece several segments of a row read (the shots every prompt starts with) is held once."""

    tokens: Sequence[int]
    start: int = 0
    prefix: tuple[int, ...] = ()


def packs(model: torch.nn.Module) -> bool:
    """Whether `model` can run packed rows: a causal model that takes a cache and whose every
    layer attends to the whole sequence through sdpa or eager attention from transformers'
    registry (which take a 4-D mask as it is: `attention.attention_implementation`)."""
    config = model_config(model)
    if config is None or is_encoder_decoder(model) or not shares_cache(model):
        return False
    return attention_implementation(model) in ("sdpa", "eager")


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward projects only the positions asked for onto the vocabulary."""
    return "logits_to_keep" in inspect.signature(transformers_model(model).forward).parameters


def pack(lengths: Sequence[int], capacity: int = ROW_TOKENS) -> list[list[int]]:
    """Rows of segment indices: as many rows as first fit (longest first) needs to hold the
    segments at `capacity` tokens a row (a longer segment: a row of its own), then filled
    evenly (longest first, each into the emptiest row), so the pass pads little; a row may
    end up a little over `capacity`."""
    room: list[int] = []
    for length in sorted(lengths, reverse=True):
        row = next((r for r, free in enumerate(room) if length <= free), None)
        if row is None:
            room.append(max(capacity, length) - length)
        else:
            room[row] -= length
    rows: list[list[int]] = [[] for _ in range(max(1, len(room)))]
    filled = [(0, row) for row in range(len(rows))]
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        held, row = heapq.heappop(filled)
        rows[row].append(index)
        heapq.heappush(filled, (held + lengths[index], row))
    return [row for row in rows if row]


def saves(lengths: Sequence[int], whole: bool = False) -> bool:
    """Whether prompts of `lengths` tokens to run cost fewer positions packed than as one
    padded batch: each one's every token (`whole`: the first new token then comes from the
    packed pass), or all but its last, then a pass of one token per row."""
    runs = list(lengths) if whole else [n - 1 for n in lengths if n > 1]
    if not runs:
        return False
    rows = pack(runs)
    packed = len(rows) * max(sum(runs[i] for i in row) for row in rows)
    padded = len(lengths) * max(lengths)
    return padded - packed >= (1 if whole else 1 + ONE_TOKEN_PASS) * len(lengths)


@torch.no_grad()
def run_packed(model: torch.nn.Module, segments: Sequence[Segment],
               prefixes: Sequence[LayerStates] = (), next_logits: bool = False
               ) -> tuple[list[LayerStates], torch.Tensor | None]:
    """(every layer's keys and values of each segment's tokens, views into the pass's whole
    cache: copy them to keep them; with `next_logits`, the float32 logits [segments, vocab]
    after each segment's last token, else None), `segments` (each non-empty) run packed into
    rows; each piece of stored states (`prefixes`) the segments of a row read is held once in
    it. The vocabulary projection runs only where logits are wanted."""
    device = next(model.parameters()).device
    rows = pack([len(s.tokens) for s in segments], ROW_TOKENS)
    # Per row, where each piece its segments read sits in the row's cache.
    placed: list[dict[int, int]] = []
    width = 0
    for row in rows:
        offsets: dict[int, int] = {}
        held = 0
        for piece in (p for index in row for p in segments[index].prefix):
            if piece not in offsets:
                offsets[piece] = held
                held += prefixes[piece][0][0].shape[1]
        placed.append(offsets)
        width = max(width, held)
    length = max(sum(len(segments[i].tokens) for i in row) for row in rows)
    ids = torch.zeros((len(rows), length), dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    seen = torch.zeros((len(rows), length, width + length), dtype=torch.bool)
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(segments)  # (row, first, end)
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            segment = segments[index]
            end = at + len(segment.tokens)
            ids[r, at:end] = torch.tensor(list(segment.tokens), dtype=torch.long)
            positions[r, at:end] = torch.arange(segment.start, segment.start + end - at)
            for piece in segment.prefix:
                first = placed[r][piece]
                seen[r, at:end, first:first + prefixes[piece][0][0].shape[1]] = True
            seen[r, at:end, width + at:width + end] = torch.ones(
                (end - at, end - at), dtype=torch.bool).tril()
            spans[index] = (r, at, end)
            at = end
        padding = torch.arange(at, length)
        seen[r, padding, width + padding] = True  # a pad position sees itself only (no NaN)
    mask = seen if attention_implementation(model) == "sdpa" else _additive(model, seen)
    cache = laid_out_cache(model, [[(at, prefixes[piece]) for piece, at in offsets.items()]
                                   for offsets in placed], width)
    inputs = {"input_ids": ids.to(device), "position_ids": positions.to(device),
              "attention_mask": mask[:, None].to(device), "use_cache": True,
              cache_argument(model): cache}
    rows_at = torch.tensor([r for r, _, _ in spans], device=device)
    last_at = torch.tensor([b - 1 for _, _, b in spans], device=device)
    logits = None
    if not next_logits:  # no vocabulary projection is wanted
        out = model(**inputs, **({"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}))
    elif defers_projection(model):
        with projection_skipped(model) as head:
            out = model(**inputs)  # the hidden states where the logits were
        logits = head(out.logits[rows_at, last_at]).float()
    else:  # the model changes its logits after the projection: at the prompts' ends only
        ends = torch.unique(last_at)  # positions kept in every row (sorted)
        kept = accepts_logits_to_keep(model)
        out = model(**inputs, **({"logits_to_keep": ends} if kept else {}))
        logits = out.logits[rows_at, torch.searchsorted(ends, last_at) if kept else last_at
                            ].float()
    filled: Any = output_cache(out)  # Any: transformers types a cache layer's keys Optional
    layers = filled.layers
    return [[(layer.keys[r, :, width + a:width + b], layer.values[r, :, width + a:width + b])
             for layer in layers] for r, a, b in spans], logits


def _additive(model: torch.nn.Module, seen: torch.Tensor) -> torch.Tensor:
    """The mask as eager attention adds it to the scores: 0 where seen, the dtype's lowest
    value elsewhere."""
    dtype: torch.dtype = getattr(transformers_model(model), "dtype", torch.float32)
    return torch.zeros(seen.shape, dtype=dtype).masked_fill_(~seen, torch.finfo(dtype).min)
