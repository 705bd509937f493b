"""The key/value cache argument of a transformers model, under whichever name it takes.

transformers 5.24 renamed the cache argument of every `forward` and of
`prepare_inputs_for_generation` from `past_key_values` to `cache`, and outputs now carry
`.cache` (the old name still works, with a FutureWarning, until transformers 5.40). tunelab's
own model calls (multiple choice shares a context's cache) pass the cache under the name the
model's signature declares, so they run without warnings on both sides of the rename and keep
working once the old name is gone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from tunelab.models.pretrained import model_config

if TYPE_CHECKING:
    from transformers import Cache
    from transformers.utils import ModelOutput

MIN_SHARED_PREFIX = 16
"""Sequences of a batch that start with at least this many identical tokens (fixed few-shot
examples, a long preamble, a chat template's system turn) run that prefix once and only their
own suffixes after it (multiple choice and generation)."""

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, (keys, values) of one sequence: [heads, tokens, head_dim] each."""

CACHE_NAMES = ("cache", "past_key_values")
"""Newest first: the names a transformers forward has taken its key/value cache under."""


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def declared_cache_argument(function: Callable[..., object]) -> str | None:
    """The cache parameter `function`'s signature declares, or None (it takes no cache, or only
    through `**kwargs`)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins and C functions have no signature
        return None
    return next((name for name in CACHE_NAMES if name in parameters), None)


def model_cache_argument(model: torch.nn.Module) -> str | None:
    """The cache keyword of a model (peft's wrapper, a transformers model), or None if it takes
    no cache. A model whose own forward only passes `**kwargs` on (a classification head) is
    answered for its backbone."""
    inner = transformers_model(model)
    name = declared_cache_argument(inner.forward)
    if name is None:
        backbone = getattr(inner, "base_model", None)  # transformers: the backbone module
        if isinstance(backbone, torch.nn.Module) and backbone is not inner:
            name = declared_cache_argument(backbone.forward)
    return name


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword `model.forward` takes its key/value cache under (the newest name for a model
    that declares none)."""
    return model_cache_argument(model) or CACHE_NAMES[0]


def takes_cache(module: torch.nn.Module) -> bool:
    """Whether `module.forward` declares a key/value cache parameter under any name."""
    return declared_cache_argument(module.forward) is not None


def output_cache(output: ModelOutput) -> Cache | None:
    """The key/value cache a model output carries (None if it has none)."""
    for name in CACHE_NAMES:
        if name in output:  # ModelOutput is a mapping of the fields that are set
            return output[name]
    return None


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every sequence starts with."""
    shortest = min(len(s) for s in seqs)
    for i in range(shortest):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return shortest


def shared_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """The prefix worth running once for `seqs`: their common prefix, leaving each sequence at
    least one own token, or 0 when it is shorter than MIN_SHARED_PREFIX (or there is one)."""
    if len(seqs) < 2:
        return 0
    shared = min(common_prefix(seqs), min(len(s) for s in seqs) - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def shares_cache(model: torch.nn.Module) -> bool:
    """Whether a cached prefix can be handed to `model`: it takes a cache, and it is no peft
    prompt-learning model (prompt/prefix tuning put their own virtual tokens in the cache)."""
    configs = getattr(model, "peft_config", None) or {}
    if any(getattr(c, "is_prompt_learning", False) for c in configs.values()):
        return False
    return model_cache_argument(model) is not None


def laid_out_cache(model: torch.nn.Module, rows: Sequence[Sequence[tuple[int, LayerStates]]],
                   width: int) -> DynamicCache:
    """A batch cache of `width` positions: row r holds each (at, states) of `rows[r]` from
    position `at` on, zeros (masked) elsewhere; empty where no row holds any."""
    cache = new_cache(model)
    template = next((states for row in rows for _, states in row), None)
    if template is None or not width:
        return cache
    for layer, (keys_like, values_like) in enumerate(template):
        keys = keys_like.new_zeros((len(rows), keys_like.shape[0], width, keys_like.shape[2]))
        values = values_like.new_zeros((len(rows), values_like.shape[0], width,
                                        values_like.shape[2]))
        for r, row in enumerate(rows):
            for at, states in row:
                held_keys, held_values = states[layer]
                keys[r, :, at:at + held_keys.shape[1]] = held_keys
                values[r, :, at:at + held_values.shape[1]] = held_values
        cache.update(keys, values, layer)
    return cache


def new_cache(model: torch.nn.Module) -> DynamicCache:
    """An empty cache of the kind `model`'s config asks for (sliding-window layers where it
    has them)."""
    try:
        return DynamicCache(config=model_config(model))
    except TypeError:  # older cache constructors take no config
        return DynamicCache()


def select_cache(model: torch.nn.Module, cache: Any,  # Any: Cache types layer keys Optional
                 index: torch.Tensor) -> DynamicCache:
    """A new cache holding rows `index` (repeats allowed) of every layer of `cache`."""
    selected = new_cache(model)
    for layer_idx, layer in enumerate(cache.layers):
        selected.update(layer.keys[index], layer.values[index], layer_idx)
    return selected
