"""Key/value caches of prompts already run, for later prompts that start the same way.

Generation runs each prompt token once where it can. A token prefix the prompts of a call
share (fixed few-shot examples, an instruction, a chat template's system turn) runs once for
the call; and a study that scores the same items in several versions (robustness's
perturbations, bias's counterfactual groups) keeps every prompt it ran while it scores one
system (`kept_prompts`): a perturbed version of an item then starts from the clean item's
cache and runs only from the first token the perturbation changed.

Entries sit in a token trie, so the longest stored prefix of a prompt is one walk down its
tokens. An entry's keys and values at positions [0, n) depend only on its first n tokens
(causal attention), so any entry through a trie node serves that node's prefix. An entry holds
only the positions it ran itself; those before them are its parent's (the entry it started
from): the shots every context shares, or a clean item a perturbed one starts from, are held
once. The store holds at most `budget` bytes (the first prompts run are kept: a study's clean
items) and only for the weights it was filled with (`models/fingerprint.py`): other weights
empty it first.

A batch built from the store has rows [stored positions | masked gap | own tokens], padded in
the middle, so every token keeps the position and attention it has in a left-padded whole
prompt (generate numbers positions from the attention mask): the same tokens come out
(tests/test_generate_prefix.py, every causal family, LoRA on top). Where packing saves
positions (`models/packed.py: saves`), a row's own tokens but its last run first, packed with
the batch's other prompts, and sit right after its stored ones: [stored | packed | masked gap |
last token]. For greedy generation and multiple choice (`whole`) every own token runs packed,
the rows are left-padded [masked gap | stored | packed], and the batch carries the logits
after each prompt (`next_logits`): generation picks its first new token from them and
`generate` starts from it; multiple choice scores the choices' first tokens from them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from tunelab.models.cache import (
    MIN_SHARED_PREFIX,
    LayerStates,
    cache_argument,
    laid_out_cache,
    output_cache,
    shared_prefix,
    shares_cache,
)
from tunelab.models.packed import Segment, packs, run_packed, saves
from tunelab.models.pretrained import is_encoder_decoder

if TYPE_CHECKING:
    from transformers import DynamicCache

PROMPT_CACHE_BYTES = 512 * 2**20
"""What a study's store holds at most: about 110 prompts of 100 tokens of the built-in 135M
model in float32 (30 layers, 3 key/value heads of 64)."""


@dataclass
class _Entry:
    """A prompt's states from position `start` on; positions before come from `parent`."""

    parent: int
    start: int
    states: LayerStates

    @property
    def end(self) -> int:
        return self.start + (self.states[0][0].shape[1] if self.states else 0)


class _Node:
    __slots__ = ("children", "entry")

    def __init__(self, entry: int) -> None:
        self.children: dict[int, _Node] = {}
        self.entry = entry
        """An entry whose tokens pass through this node (it serves the node's prefix)."""


@dataclass
class BatchInputs:
    """A batch laid out on the store's caches, for `model.generate` or a forward pass."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cached: dict[str, object]
    """The cache under the model's keyword (empty: the rows reuse nothing)."""
    reused: list[int]
    """Per row, the positions the cache holds before its own tokens (the cache spans the
    widest; shorter rows are masked up to it)."""
    stored: list[int]
    """Per row, the first of those positions, read from the store (the rest ran packed)."""
    entries: list[int]
    """Per row, the stored entry its positions were read from (-1: none)."""
    offsets: list[int]
    """Per row, the cache position its prompt's first token sits at (left padding before)."""
    next_logits: torch.Tensor | None = None
    """[rows, vocab] float32 logits after each whole prompt, where every prompt token ran
    (`whole`): the cache then holds every prompt and `input_ids` has no token to run."""

    @property
    def width(self) -> int:
        """Positions the cache holds before the batch's own tokens."""
        return max(self.reused)

    def position_ids(self) -> torch.Tensor:
        """Each own token's position, numbered from the attention mask as `generate` numbers
        them ([rows, own tokens]): for a forward pass that is not `generate`."""
        positions = self.attention_mask.long().cumsum(-1) - 1
        return positions.masked_fill(self.attention_mask == 0, 1)[:, self.width:]


class PromptCaches:
    """Prompts' key/value states by their tokens, found by the longest stored prefix.

    `keeps_rows`: every prompt of every batch is kept (a study's store, within `budget`
    bytes); otherwise only the shared prefixes `extend` runs (one call's, whatever their size:
    a prefix left out would run again for every batch)."""

    def __init__(self, budget: int = PROMPT_CACHE_BYTES, keeps_rows: bool = True) -> None:
        self.budget = budget if keeps_rows else sys.maxsize
        self.keeps_rows = keeps_rows
        self.bytes = 0
        self.reused_tokens = 0
        """Prompt positions read from the store instead of run (what the store saved)."""
        self._root = _Node(-1)
        self._entries: list[_Entry] = []
        self._weights: str | None = None
        self._seen = _Node(-1)
        """Prompts answered without running (the result cache had them): tokens, no states."""
        self._seen_prompts: list[tuple[int, ...]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, weights: str) -> None:
        """Serve the weights of fingerprint `weights` (models/fingerprint.py): a store filled
        with other weights is emptied."""
        if weights != self._weights:
            self._root, self._entries, self.bytes = _Node(-1), [], 0
            self._seen, self._seen_prompts = _Node(-1), []
            self._weights = weights

    def longest(self, prompt: Sequence[int]) -> tuple[int, int]:
        """(length, entry) of the longest stored prefix of `prompt`; (0, -1) without one."""
        return _longest(self._root, prompt)

    def to_run(self, prompt: Sequence[int]) -> int:
        """The tokens of `prompt` a model would run now (all but those stored; at least
        one)."""
        return len(prompt) - min(self.longest(prompt)[0], len(prompt) - 1)

    def note(self, prompt: Sequence[int]) -> None:
        """Remember a prompt answered without running (its result was looked up): a later
        prompt that shares more of it than the store holds runs it first (`anchors`)."""
        if self.keeps_rows:
            _insert(self._seen, prompt, len(self._seen_prompts))
            self._seen_prompts.append(tuple(prompt))

    def anchors(self, prompts: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """The noted prompts worth running before `prompts`: each shares at least
        MIN_SHARED_PREFIX more tokens with one of them than the store holds."""
        wanted: dict[int, None] = {}
        for prompt in prompts if self.bytes < self.budget else ():
            length, entry = _longest(self._seen, prompt)
            if length - self.longest(prompt)[0] >= MIN_SHARED_PREFIX:
                wanted[entry] = None
        return [self._seen_prompts[entry] for entry in wanted]

    def plan(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]],
             run_anchors: Callable[[list[tuple[int, ...]]], object] | None = None) -> list[int]:
        """Prepare a call over `prompts`: the prefix they all share run once and kept, the
        prompts noted earlier that they share more of (`anchors`) run by `run_anchors` (which
        keeps them) first; returns the order to run them in: most tokens still to run first
        (similar lengths share a batch and memory peaks early)."""
        if whole := shared_prefix(prompts):
            self.extend(model, prompts[0][:whole])
        if run_anchors is not None and (anchors := self.anchors(prompts)):
            run_anchors(anchors)
        return sorted(range(len(prompts)), key=lambda i: -self.to_run(prompts[i]))

    def add(self, prompt: Sequence[int], states: LayerStates, start: int = 0,
            parent: int = -1) -> bool:
        """Keep `states` (every layer's, `prompt`'s positions from `start` on; those before
        are entry `parent`'s) unless the budget is spent; whether it was kept."""
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in states)
        if self.bytes + size > self.budget:
            return False
        _insert(self._root, prompt, len(self._entries))
        self._entries.append(_Entry(parent, start, states))
        self.bytes += size
        return True

    def extend(self, model: torch.nn.Module, prefix: Sequence[int]) -> None:
        """Run `prefix` (from its longest stored part on) as one row and keep it."""
        length, entry = self.longest(prefix)
        if length == len(prefix):
            return
        device = next(model.parameters()).device
        cache = self._gather(model, [(entry, length)], length) if length else None
        kwargs = {cache_argument(model): cache} if cache is not None else {}
        out = model(input_ids=torch.tensor([list(prefix[length:])], device=device),
                    use_cache=True, **kwargs)
        self.reused_tokens += length
        states = _row_states(output_cache(out), 0, [(length, len(prefix))])
        if states is not None:
            self.add(prefix, states, length, entry)

    def inputs(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int = 0,
               whole: bool = False) -> BatchInputs:
        """A batch of `prompts` reading each one's longest stored prefix; where the model
        packs and that saves positions (`models/packed.py`), every prompt but its last token
        runs first packed without padding, and each row then runs one token, its last; with
        `whole`, the last tokens run packed too and the batch carries the logits after them
        (`next_logits`). A prefix the batch's prompts share runs once first and is kept,
        where the store lacks at least MIN_SHARED_PREFIX of its tokens (worth a pass of its
        own)."""
        device = next(model.parameters()).device
        own = shared_prefix(prompts)
        if own and own - self.longest(prompts[0][:own])[0] >= MIN_SHARED_PREFIX:
            self.extend(model, prompts[0][:own])
        found = [self.longest(p) for p in prompts]
        stored = [min(length, len(p) - 1) for (length, _), p in zip(found, prompts, strict=True)]
        entries = [entry for _, entry in found]
        self.reused_tokens += sum(stored)
        if whole:
            fresh, logits = self._prefill(model, prompts, stored, entries, whole=True)
            if logits is not None:
                return self._whole(model, prompts, stored, entries, fresh, logits, pad_id)
        fresh, _ = self._prefill(model, prompts, stored, entries)
        reused = [len(p) - 1 if states is not None else n
                  for p, n, states in zip(prompts, stored, fresh, strict=True)]
        width = max(reused)
        own = max(len(p) - n for p, n in zip(prompts, reused, strict=True))
        ids = torch.full((len(prompts), width + own), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, n) in enumerate(zip(prompts, reused, strict=True)):
            ids[row, :n] = torch.tensor(list(prompt[:n]), dtype=torch.long)
            mask[row, :n] = 1
            tail = len(prompt) - n
            ids[row, width + own - tail:] = torch.tensor(list(prompt[n:]), dtype=torch.long)
            mask[row, width + own - tail:] = 1
        cached: dict[str, object] = {}
        if width or self.keeps_rows:  # an empty cache object is filled in place by generate
            rows = list(zip(entries, stored, strict=True))
            cached[cache_argument(model)] = self._gather(model, rows, width, fresh)
        return BatchInputs(ids.to(device), mask.to(device), cached, reused, stored, entries,
                           [0] * len(prompts))

    def _whole(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]],
               stored: list[int], entries: list[int], fresh: Sequence[LayerStates | None],
               logits: torch.Tensor, pad_id: int) -> BatchInputs:
        """The batch of prompts that all ran (their stored and `fresh` states), left-padded:
        [masked gap | prompt], every position in the cache."""
        device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        offsets = [width - len(p) for p in prompts]
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (prompt, at) in enumerate(zip(prompts, offsets, strict=True)):
            ids[row, at:] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, at:] = 1
        rows = list(zip(entries, stored, strict=True))
        cache = self._gather(model, rows, width, fresh, offsets)
        return BatchInputs(ids.to(device), mask.to(device), {cache_argument(model): cache},
                           [len(p) for p in prompts], stored, entries, offsets, logits)

    def _prefill(self, model: torch.nn.Module, prompts: Sequence[Sequence[int]],
                 stored: Sequence[int], entries: Sequence[int], whole: bool = False
                 ) -> tuple[list[LayerStates | None], torch.Tensor | None]:
        """(per prompt, the states of its tokens after the `stored` ones and before its last,
        or through its last with `whole`, run packed; the logits after each prompt, `whole`
        only), or Nones where nothing is to run or the model runs padded batches."""
        fresh: list[LayerStates | None] = [None] * len(prompts)
        cut = 0 if whole else 1  # tokens left to a later pass
        todo = [i for i, (p, n) in enumerate(zip(prompts, stored, strict=True))
                if len(p) - n > cut]
        if not todo or not packs(model) or not saves([len(p) - n for p, n in zip(
                prompts, stored, strict=True)], whole):
            return fresh, None
        pieces: dict[tuple[int, int, int], int] = {}  # (entry, from, to): a stored piece
        segments = []
        for i in todo:  # a prompt's stored positions: the pieces of its entry's chain
            held = self._segments(entries[i], stored[i])
            segments.append(Segment(prompts[i][stored[i]:len(prompts[i]) - cut], stored[i],
                                    tuple(pieces.setdefault(piece, len(pieces))
                                          for piece in held)))
        out, logits = run_packed(model, segments, [self._piece(*piece) for piece in pieces],
                                 next_logits=whole)
        for i, states in zip(todo, out, strict=True):
            fresh[i] = states
        return fresh, logits

    def keep(self, prompts: Sequence[Sequence[int]], batch: BatchInputs) -> None:
        """After `batch` ran (`generate` or a forward pass filled its cache in place; with
        `next_logits` it holds every prompt already), keep every prompt's states, as long as
        the budget lasts."""
        if not self.keeps_rows or not batch.cached:
            return
        cache = next(iter(batch.cached.values()))
        end = batch.input_ids.shape[1]
        for row, (prompt, n) in enumerate(zip(prompts, batch.stored, strict=True)):
            if self.longest(prompt)[0] == len(prompt):
                continue  # kept already (a prompt repeated in the study)
            held, at = batch.reused[row], batch.offsets[row]  # [n, held): ran before the batch
            states = _row_states(cache, row, [(at + n, at + held),
                                              (end - (len(prompt) - held), end)])
            if states is None or not self.add(prompt, states, n, batch.entries[row] if n else -1):
                return

    def _gather(self, model: torch.nn.Module, rows: Sequence[tuple[int, int]], width: int,
                fresh: Sequence[LayerStates | None] = (), offsets: Sequence[int] = ()
                ) -> DynamicCache:
        """A batch cache of `width` positions: row r holds, from position `offsets[r]` (0 if
        none), its entry's first n positions, then its `fresh` states (if any), zeros (masked)
        elsewhere."""
        shift = list(offsets) or [0] * len(rows)
        laid = [[(piece[1] + at, self._piece(*piece)) for piece in self._segments(entry, n)]
                for (entry, n), at in zip(rows, shift, strict=True)]
        for row, states in enumerate(fresh):
            if states is not None:
                laid[row].append((rows[row][1] + shift[row], states))
        return laid_out_cache(model, laid, width)

    def _piece(self, entry: int, lo: int, hi: int) -> LayerStates:
        """Positions [lo, hi) of the states `entry` holds, every layer's (views)."""
        part = self._entries[entry]
        return [(keys[:, lo - part.start:hi - part.start], values[:, lo - part.start:
                                                                 hi - part.start])
                for keys, values in part.states]

    def _segments(self, entry: int, n: int) -> list[tuple[int, int, int]]:
        """(entry, from, to) of the stored pieces that make up `entry`'s first n positions."""
        segments = []
        while n > 0:
            part = self._entries[entry]
            if n > part.start:
                segments.append((entry, part.start, min(n, part.end)))
                n = part.start
            entry = part.parent
        return segments


def _longest(root: _Node, prompt: Sequence[int]) -> tuple[int, int]:
    """(length, entry) of the longest path from `root` along `prompt`'s tokens."""
    node, length = root, 0
    for token in prompt:
        child = node.children.get(token)
        if child is None:
            break
        node, length = child, length + 1
    return length, node.entry


def _insert(root: _Node, prompt: Sequence[int], entry: int) -> None:
    """`prompt`'s path from `root`, its new nodes marked with `entry`."""
    node = root
    for token in prompt:
        child = node.children.get(token)
        if child is None:
            child = node.children[token] = _Node(entry)
        node = child


def _row_states(cache: object, row: int, spans: Sequence[tuple[int, int]]) -> LayerStates | None:
    """Row `row`'s states over `spans` of positions, or None where a layer no longer holds every
    position it saw (a sliding window keeps only its last ones)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return None
    states = []
    for layer in layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor) \
                or keys.dim() != 4 or keys.shape[-2] != layer.get_seq_length():
            return None
        states.append((torch.cat([keys[row, :, a:b] for a, b in spans], dim=1),
                       torch.cat([values[row, :, a:b] for a, b in spans], dim=1)))
    return states


def reuses_prompts(model: torch.nn.Module) -> bool:
    """Whether `model` can start from stored prompt states: a causal model that takes a cache
    (no encoder-decoder, no peft prompt learning)."""
    return shares_cache(model) and not is_encoder_decoder(model)


class HoldsPromptCaches(Protocol):
    """A loaded model (`models.kinds.LoadedModel`) and the store its generation reads."""

    prompt_caches: PromptCaches | None


@contextmanager
def kept_prompts(lm: HoldsPromptCaches) -> Iterator[PromptCaches]:
    """Every prompt `lm` generates from inside the block is kept for the prompts after it (one
    system's clean and perturbed items); the store is dropped at the end."""
    previous = lm.prompt_caches
    lm.prompt_caches = PromptCaches()
    try:
        yield lm.prompt_caches
    finally:
        lm.prompt_caches = previous
