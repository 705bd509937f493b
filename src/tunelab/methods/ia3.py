"""(IA)^3 (Liu et al., 2022), via peft: learned vectors rescale keys, values and the
feed-forward activations; initialised to ones (output unchanged) and merged into the weights.

Targets default to peft's per-architecture mapping (Llama, Mistral, Gemma 1-3, Qwen, GPT-2, T5,
BART, BERT, RoBERTa, ...). Non-feed-forward targets scale their output (a vector of
out_features); feed-forward targets scale their input (a vector of in_features), i.e. the
activation between the feed-forward's two layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.core.errors import TunelabError
from tunelab.methods.base import register
from tunelab.methods.peft_backed import PeftMethod
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig


@dataclass
class IA3Options:
    target_modules: list[str] | None = None
    """Module-name suffixes to rescale; default: peft's mapping for the architecture."""
    feedforward_modules: list[str] | None = None
    """Those of target_modules that are a feed-forward's second layer (rescaled on their input);
    default: peft's mapping, or none of target_modules when those are given alone."""


def build_config(options: IA3Options, model: torch.nn.Module, kind: ModelKind
                 ) -> PeftConfig:
    from peft import IA3Config
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets, feedforward = options.target_modules, options.feedforward_modules
    if targets is None:
        if model_type not in TARGETS:
            raise TunelabError(
                f"method (ia3).target_modules: peft has no default for model type '{model_type}'; "
                "set target_modules (e.g. [k_proj, v_proj, down_proj]) and feedforward_modules "
                "(e.g. [down_proj])")
        targets = TARGETS[model_type]
        if feedforward is None:
            feedforward = FEEDFORWARD.get(model_type, [])
    elif feedforward is None:
        feedforward = []
    if not set(feedforward) <= set(targets):
        raise TunelabError(f"method (ia3).feedforward_modules: {sorted(set(feedforward) - set(targets))} "
                           "not in target_modules; list every feed-forward module in target_modules too")
    return IA3Config(target_modules=list(targets), feedforward_modules=list(feedforward),
                     task_type=kind.peft_task_type)


METHOD = register(PeftMethod("ia3", IA3Options, build_config, sweep_lr=3e-3, can_merge=True))
