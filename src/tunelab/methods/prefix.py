"""Prefix tuning (Li & Liang, 2021), via peft: learned key/value prefixes of
`num_virtual_tokens` positions for every attention layer, fed to the model as a pre-filled KV
cache. With `prefix_projection` the prefixes come from a two-layer MLP (the paper's
reparametrisation); peft then saves the projected prefixes, not the MLP. No merge.

peft 0.21 + transformers 5: generation with `use_cache=False` is broken. transformers now keeps
the cache a forward returns even when use_cache is False, and peft then treats the grown prefix
cache as a real KV cache: it cuts the input to its last token while the attention mask still
spans the whole input. Llama fails with a shape error (mat1 and mat2 shapes cannot be
multiplied); T5 and BART silently attend to stale keys. `fix_uncached_generation` drops that
stale cache before peft prepares each step, so peft builds a fresh prefix every step, as it did
before. On transformers >= 5.24 (the cache argument renamed to `cache`) `peft_compat.patch`
also applies: see tunelab/methods/peft_compat.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunelab.config.choices import COUNT, Range
from tunelab.core.deferred import deferred, torch
from tunelab.core.errors import TunelabError
from tunelab.methods import peft_compat
from tunelab.methods.base import register, set_plain_attribute
from tunelab.methods.peft_backed import PeftMethod
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    from peft import PeftConfig

    from tunelab.models import cache as model_cache
else:
    model_cache = deferred("tunelab.models.cache")  # torch and transformers at import


@dataclass
class PrefixOptions:
    limits: ClassVar[dict[str, Range]] = {"num_virtual_tokens": COUNT, "encoder_hidden_size": COUNT}
    """Checked as the config is read, before any model loads."""
    num_virtual_tokens: int = 20
    """Prefix length (key/value positions added to every attention layer)."""
    prefix_projection: bool = False
    """Produce the prefixes with an MLP (embedding -> hidden -> tanh -> keys/values)."""
    encoder_hidden_size: int | None = None
    """Hidden width of that MLP; default the model's key/value width."""


def build_config(options: PrefixOptions, model: torch.nn.Module, kind: ModelKind
                 ) -> PeftConfig:
    from peft import PrefixTuningConfig

    if options.num_virtual_tokens < 1:
        raise TunelabError("method (prefix).num_virtual_tokens: must be at least 1")
    if model_cache.model_cache_argument(model) is None:
        raise TunelabError(f"method (prefix): {type(model).__name__} takes no key/value cache, "
                           "which prefix tuning feeds its prefixes through; use prompt, lora or ia3")
    config = PrefixTuningConfig(task_type=kind.peft_task_type,
                                num_virtual_tokens=options.num_virtual_tokens,
                                prefix_projection=options.prefix_projection)
    if options.encoder_hidden_size:  # else peft's default: the key/value width
        config.encoder_hidden_size = options.encoder_hidden_size
    return config


def fix_uncached_generation(model: torch.nn.Module) -> torch.nn.Module:
    """Make `generate(use_cache=False)` rebuild the prefix each step (see the module docstring)."""
    prepare = getattr(model, "prepare_inputs_for_generation", None)
    if prepare is None:  # not a generative model (e.g. a classifier)
        return model

    def prepare_inputs_for_generation(*args: object, **kwargs: object) -> dict[str, object]:
        if kwargs.get("use_cache") is False:
            for name in model_cache.CACHE_NAMES:
                kwargs.pop(name, None)
        return prepare(*args, **kwargs)

    set_plain_attribute(model, "prepare_inputs_for_generation", prepare_inputs_for_generation)
    return model


def recomputable_prefix(model: torch.nn.Module) -> torch.nn.Module:
    """While training, the prefix cache peft builds for a forward pass is read, never extended:
    each layer's `update` returns prefix + the new keys/values without storing them. A block
    recomputed by gradient checkpointing then sees the same prefix again (peft's cache would
    hold the first pass's keys too: a size mismatch). Nothing reads the extended cache of a
    training forward (use_cache is off); generation keeps peft's cache as it is."""
    # (transformers' checkpointed layers drop a cache unless told they may keep it, below)
    get_prompt = getattr(model, "get_prompt", None)
    if get_prompt is None:
        return model

    def prompt(*args: object, **kwargs: object) -> object:
        cache = get_prompt(*args, **kwargs)
        if model.training and torch.is_grad_enabled() and hasattr(cache, "layers"):
            def update(keys: torch.Tensor, values: torch.Tensor, layer_idx: int,
                       *rest: object, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
                layer = cache.layers[layer_idx]
                return (torch.cat([layer.keys, keys], dim=-2),
                        torch.cat([layer.values, values], dim=-2))

            cache.update = update
        return cache

    set_plain_attribute(model, "get_prompt", prompt)
    # transformers' checkpointed layers drop a cache (it would be extended twice); this one is
    # never extended while training, so the layers may keep it and see the prefix
    for module in model.modules():
        if hasattr(module, "_can_checkpoint_with_cache"):
            set_plain_attribute(module, "_can_checkpoint_with_cache", True)
    return model


def after_wrap(model: torch.nn.Module) -> torch.nn.Module:
    return recomputable_prefix(fix_uncached_generation(peft_compat.patch(model)))


METHOD = register(PeftMethod("prefix", PrefixOptions, build_config, sweep_lr=1e-2,
                             after_wrap=after_wrap, supports_packing=False))
