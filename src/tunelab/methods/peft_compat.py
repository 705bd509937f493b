"""Workarounds for peft's prompt learning (prompt and prefix tuning) on transformers >= 5.24.

transformers 5.24 renamed the key/value cache argument from `past_key_values` to `cache`
(`tunelab.models.cache`). peft <= 0.21.2 still speaks of `past_key_values`, which breaks three
things that no error points at:

1. Generation. peft's `prepare_inputs_for_generation` reads `model_kwargs["past_key_values"]`
   to tell the first step from the later ones, and the base model now returns the cache as
   `cache`. Prompt tuning therefore re-inserts its soft prompt at every step and never cuts
   the input to the new token; prefix tuning's prefix goes in as `past_key_values` beside
   transformers' empty `cache`, and transformers keeps `cache` (the prefix is dropped). Cached
   generation then differs from the uncached greedy loop (GPT-2, Llama, T5, BART).
2. Prefix tuning under a classification head (BERT). peft looks for a `past_key_values`
   parameter in the backbone's forward signature and raises "Model does not support past key
   values which are required for prefix tuning." at the first forward.
3. Forward passes. peft hands the prefix to the model as `past_key_values=`, which transformers
   accepts with a FutureWarning on every call, until 5.40 removes the old name.

`patch` renames at those three seams: the model kwargs peft's generation step reads carry the
old name, and every call into the model (a forward pre-hook; the BERT backbone's forward)
carries the new one. It applies only where the model takes `cache` and peft is a release known
to need it (`LAST_PEFT_WITHOUT_CACHE_NAME`). tests/test_peft_compat.py checks both ways: where
it applies, plain peft still fails (a peft that fixed the rename fails that test, and the bound
or the workaround must go); where it does not apply, plain peft works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from packaging.version import Version

from tunelab.core.deferred import deferred
from tunelab.core.dependencies import installed_version
from tunelab.methods.base import set_plain_attribute

if TYPE_CHECKING:
    import torch

    from tunelab.models import cache as model_cache
else:
    model_cache = deferred("tunelab.models.cache")  # torch and transformers at import

OLD_NAME, NEW_NAME = "past_key_values", "cache"
LAST_PEFT_WITHOUT_CACHE_NAME = Version("0.21.2")
"""The newest peft release checked to read and pass the cache only as `past_key_values`."""


def needs_patch(model: torch.nn.Module, peft_version: str | None = None) -> bool:
    """Whether `model` (a transformers model, or peft's wrapper of one) takes its cache as
    `cache` while the installed peft (or `peft_version`) speaks only of `past_key_values`."""
    installed = Version(peft_version or installed_version("peft") or "0")
    return installed <= LAST_PEFT_WITHOUT_CACHE_NAME and model_cache.cache_argument(model) == NEW_NAME


def patch(peft_model: torch.nn.Module) -> torch.nn.Module:
    """Make a peft prompt-learning model work on transformers' `cache` name (see module doc).
    A no-op where `needs_patch` is False; returns the model for chaining."""
    if not needs_patch(peft_model):
        return peft_model
    # seam 3 (and seam 1's model call): whatever peft passes as past_key_values arrives as cache
    model_cache.transformers_model(peft_model).register_forward_pre_hook(_new_name_in_call, with_kwargs=True)
    backbone = _prefix_backbone(peft_model)
    if backbone is not None:  # seam 2
        backbone.forward = _declaring_old_name(backbone.forward)
    prepare = getattr(peft_model, "base_model_prepare_inputs_for_generation", None)
    if prepare is not None:  # seam 1
        set_plain_attribute(peft_model, "base_model_prepare_inputs_for_generation",
                            _old_name_for_peft(prepare))
    return peft_model


def _with_new_name(kwargs: dict[str, object]) -> dict[str, object]:
    """`kwargs` with a cache given as `past_key_values` moved to `cache` (unless one is set)."""
    if OLD_NAME in kwargs:
        cache = kwargs.pop(OLD_NAME)
        if kwargs.get(NEW_NAME) is None:
            kwargs[NEW_NAME] = cache
    return kwargs


def _new_name_in_call(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
                      ) -> tuple[tuple[object, ...], dict[str, object]]:
    """Forward pre-hook: a cache passed as `past_key_values` reaches the model as `cache`."""
    return args, _with_new_name(kwargs)


def _old_name_for_peft(prepare: Callable[..., dict[str, object]]
                       ) -> Callable[..., dict[str, object]]:
    """The base model's `prepare_inputs_for_generation`, returning the cache under the name
    peft's own prepare step reads (`past_key_values`); the pre-hook renames it back."""

    def prepare_inputs_for_generation(*args: object, **kwargs: object) -> dict[str, object]:
        inputs = prepare(*args, **kwargs)
        if NEW_NAME in inputs:
            inputs[OLD_NAME] = inputs.pop(NEW_NAME)
        return inputs

    return prepare_inputs_for_generation


def _prefix_backbone(peft_model: torch.nn.Module) -> torch.nn.Module | None:
    """The backbone peft calls directly with the prefix (prefix tuning under a head whose own
    forward takes no cache), or None."""
    name = getattr(peft_model, "transformer_backbone_name", None)
    if name is None or not getattr(peft_model, "cls_layer_name", None):
        return None  # not a classification wrapper
    head_model = model_cache.transformers_model(peft_model)
    backbone = head_model.get_submodule(name)
    return None if model_cache.takes_cache(head_model) or not model_cache.takes_cache(backbone) \
        else backbone


def _declaring_old_name(forward: Callable[..., object]) -> Callable[..., object]:
    """`forward` with a `past_key_values` parameter in its signature, passed on as `cache`."""

    def forward_taking_past_key_values(*args: object, past_key_values: object = None,
                                       **kwargs: object) -> object:
        return forward(*args, **_with_new_name({**kwargs, OLD_NAME: past_key_values}))

    return forward_taking_past_key_values
