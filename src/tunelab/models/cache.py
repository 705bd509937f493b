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
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import Cache
    from transformers.utils import ModelOutput

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
