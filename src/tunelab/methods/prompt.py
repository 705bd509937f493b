"""Prompt tuning (Lester et al., 2021), via peft: learned embeddings of `num_virtual_tokens`
virtual tokens are prepended to the input embeddings; the model is frozen. No merge.

Logits come back `num_virtual_tokens` positions longer than the input (peft does not strip the
virtual positions); `tunelab.methods.base.input_logits` takes the input's positions. On
transformers >= 5.24 cached generation needs `peft_compat.patch` (tunelab/methods/peft_compat.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from tunelab.config.choices import COUNT, Range
from tunelab.core.errors import TunelabError
from tunelab.methods import peft_compat
from tunelab.methods.base import register
from tunelab.methods.peft_backed import PeftMethod
from tunelab.models.kinds import ModelKind

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig


@dataclass
class PromptOptions:
    limits: ClassVar[dict[str, Range]] = {"num_virtual_tokens": COUNT}
    """Checked as the config is read, before any model loads (as `init`'s choices)."""
    num_virtual_tokens: int = 20
    """Length of the learned soft prompt."""
    init: Literal["random", "text"] = "random"
    """random, or text: start from the embeddings of `init_text`'s tokens (repeated to length)."""
    init_text: str | None = None
    """For init=text, e.g. 'Classify the sentiment of this review:'."""
    tokenizer: str | None = None
    """For init=text: the tokenizer directory or hub id; default the model's own directory."""


def model_source(model: torch.nn.Module) -> str | None:
    """The directory or hub id the model was loaded from, if it knows one."""
    source = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "_name_or_path", None)
    return str(source) if source else None


def build_config(options: PromptOptions, model: torch.nn.Module, kind: ModelKind
                 ) -> PeftConfig:
    from peft import PromptTuningConfig

    if options.init == "random":
        return PromptTuningConfig(task_type=kind.peft_task_type,
                                  num_virtual_tokens=options.num_virtual_tokens)
    if not options.init_text:
        raise TunelabError("method (prompt).init_text: init=text needs the text, "
                           "e.g. init_text: 'Classify the sentiment:'")
    tokenizer = options.tokenizer or model_source(model)
    if not tokenizer or (not Path(tokenizer).exists() and tokenizer.count("/") != 1):
        raise TunelabError("method (prompt).tokenizer: the model does not know where its "
                           "tokenizer is; set tokenizer to a tokenizer directory")
    return PromptTuningConfig(
        task_type=kind.peft_task_type, num_virtual_tokens=options.num_virtual_tokens,
        prompt_tuning_init="TEXT", prompt_tuning_init_text=options.init_text,
        tokenizer_name_or_path=tokenizer)


METHOD = register(PeftMethod("prompt", PromptOptions, build_config, sweep_lr=3e-2,
                             after_wrap=peft_compat.patch, supports_packing=False))
