"""Log-likelihoods of the scored positions only, never full-vocabulary logits everywhere.

A causal LM's forward projects every position onto the vocabulary: [batch, length, vocab]
logits (49152 columns for the built-in model), most of them thrown away (the prompt's
positions, the padding). Here the model runs with its output projection skipped, so it returns
hidden states [batch, length, hidden]; the positions that predict a target are picked out and
projected in chunks of CHUNK rows, each chunk's float32 logits living only while its
cross-entropy is taken. With gradients, each chunk is recomputed in the backward pass
(`torch.utils.checkpoint`), so at most one chunk's logits exist at a time.

Targets are aligned with the inputs: `targets[b, t]` is the token position t predicts
(IGNORE_INDEX where nothing is scored), e.g. `shifted(labels)` for training labels.

A model whose forward changes the logits after the projection (soft-capping, scaling) cannot
have it skipped: each model is checked once on a short input against its own logits
(`defers_projection`) and otherwise scored from its full logits, with the same results.
Methods that prepend virtual tokens (prompt tuning) return longer outputs; the inputs' own
positions are always the last ones.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunelab.models.tokens import IGNORE_INDEX

CHUNK = 1024
"""Positions projected onto the vocabulary at once (200 MB of float32 logits at 49k)."""

ModelInputs = Mapping[str, "torch.Tensor | bool"]
"""What a model is called with: tensors and flags such as `use_cache`."""

_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


@dataclass
class ScoredTokens:
    """Per-token results at the scored positions, in (row, position) order."""

    nll: torch.Tensor
    """[N] negative log-likelihood of each target."""
    greedy: torch.Tensor
    """[N] bool: the target is the argmax (filled only when asked for)."""
    rows: torch.Tensor
    """[N] the batch row of each target."""


def shifted(labels: torch.Tensor) -> torch.Tensor:
    """Training labels as targets: position t predicts labels[t + 1]; the last predicts nothing."""
    pad = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([labels[:, 1:], pad], dim=1)


def summed_nll(model: torch.nn.Module, inputs: ModelInputs, targets: torch.Tensor
               ) -> torch.Tensor:
    """The summed NLL of every target (a scalar that backpropagates: the training loss)."""
    states = _target_states(model, inputs, targets)
    if isinstance(states, _Logits):  # full logits: the model post-processes them
        return F.cross_entropy(states.logits.float(), states.targets, reduction="sum")
    hidden, wanted, head = states.hidden, states.targets, states.head
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], CHUNK):
        part, goal = hidden[start:start + CHUNK], wanted[start:start + CHUNK]
        if torch.is_grad_enabled() and hidden.shape[0] > CHUNK:
            total = total + checkpoint(_chunk_nll, head, part, goal, use_reentrant=False)
        else:
            total = total + _chunk_nll(head, part, goal)
    return total


@torch.no_grad()
def token_scores(model: torch.nn.Module, inputs: ModelInputs, targets: torch.Tensor,
                 greedy: bool = False) -> ScoredTokens:
    """NLL (and whether each target is the greedy choice) of every target, no gradients."""
    keep = targets != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    states = _target_states(model, inputs, targets)
    if isinstance(states, _Logits):
        logits, goal = states.logits.float(), states.targets
        nll = F.cross_entropy(logits, goal, reduction="none")
        best = logits.argmax(-1) == goal if greedy else torch.zeros_like(goal, dtype=torch.bool)
        return ScoredTokens(nll, best, rows)
    hidden, wanted, head = states.hidden, states.targets, states.head
    nlls, bests = [], []
    for start in range(0, hidden.shape[0], CHUNK):
        logits = head(hidden[start:start + CHUNK]).float()
        goal = wanted[start:start + CHUNK]
        nlls.append(F.cross_entropy(logits, goal, reduction="none"))
        bests.append(logits.argmax(-1) == goal if greedy
                     else torch.zeros_like(goal, dtype=torch.bool))
    empty = targets.new_zeros(0)
    return ScoredTokens(torch.cat(nlls) if nlls else empty.float(),
                        torch.cat(bests) if bests else empty.bool(), rows)


def decoder_logits(model: torch.nn.Module, labels: torch.Tensor, **inputs: object
                   ) -> torch.Tensor:
    """An encoder-decoder model's float32 logits [rows, label positions, vocab] where its
    decoder reads `labels` (IGNORE_INDEX where padded) shifted right after its start token, as
    training does; `inputs` are the encoder's (input_ids or encoder_outputs, attention_mask).
    The model is not given the labels, so it computes no loss of its own."""
    prepare: Any = model.prepare_decoder_input_ids_from_labels  # Any: transformers' method
    return model(**inputs, decoder_input_ids=prepare(labels=labels)).logits.float()


def row_sums(scored: ScoredTokens, batch: int) -> tuple[list[float], list[int]]:
    """Summed NLL and target count of each batch row."""
    sums = torch.zeros(batch, dtype=torch.float64).index_add_(0, scored.rows.cpu(),
                                                              scored.nll.double().cpu())
    counts = torch.bincount(scored.rows.cpu(), minlength=batch)
    return sums.tolist(), counts.tolist()


def _chunk_nll(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


@dataclass
class _Hidden:
    """The scored positions' hidden states, to be projected onto the vocabulary."""

    hidden: torch.Tensor
    """[N, H] at the scored positions."""
    targets: torch.Tensor
    """[N]"""
    head: torch.nn.Module
    """The output projection."""


@dataclass
class _Logits:
    """The scored positions' logits, from a model that cannot skip its projection."""

    logits: torch.Tensor
    """[N, V] at the scored positions."""
    targets: torch.Tensor
    """[N]"""


def _target_states(model: torch.nn.Module, inputs: ModelInputs, targets: torch.Tensor
                   ) -> _Hidden | _Logits:
    """The hidden states at the scored positions with their targets and the projection, or
    the logits there for a model that cannot skip it."""
    keep = targets != IGNORE_INDEX
    width = targets.shape[1]
    if not defers_projection(model):
        logits = model(**inputs).logits
        return _Logits(logits[:, logits.shape[1] - width:][keep], targets[keep])
    with projection_skipped(model) as head:
        hidden = model(**inputs).logits  # the head was the identity: hidden states
    return _Hidden(hidden[:, hidden.shape[1] - width:][keep], targets[keep], head)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


@contextmanager
def projection_skipped(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The output projection is the identity inside (the model returns hidden states where it
    returned logits); yields the projection, called normally again once the block ends."""
    head = output_projection(_unwrapped(model))
    if head is None:
        raise TypeError("the model has no output projection to skip")
    head.forward = _identity  # an instance attribute shadows the class's forward
    try:
        yield head
    finally:
        del head.forward


def output_projection(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model's output projection (transformers' `get_output_embeddings`), or None."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Module) else None


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def defers_projection(model: torch.nn.Module) -> bool:
    """Whether the model's logits are exactly its output projection of the hidden states
    (checked once per model on a short input)."""
    inner = _unwrapped(model)
    known = _CHECKED.get(inner)
    if known is not None:
        return known
    if output_projection(inner) is None:
        _CHECKED[inner] = False
        return False
    device = next(inner.parameters()).device
    vocab = min(int(getattr(inner.config, "vocab_size", 100) or 100), 1000)
    ids = (torch.arange(6, device=device)[None] * 37 + 11) % vocab
    training = inner.training
    inner.eval()
    try:
        with torch.no_grad():
            full = inner(input_ids=ids, use_cache=False).logits.float()
            with projection_skipped(inner) as projection:
                hidden = inner(input_ids=ids, use_cache=False).logits
            mine = projection(hidden).float()
        same = full.shape == mine.shape and torch.allclose(full, mine, rtol=1e-6, atol=1e-7)
    except (RuntimeError, TypeError, ValueError, AttributeError):
        same = False
    finally:
        inner.train(training)
    _CHECKED[inner] = same
    return same
