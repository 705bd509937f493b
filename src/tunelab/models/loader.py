"""Load a model and tokenizer from a built-in alias, a local directory or a hub id, as the
model kind says (models/kinds.py)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import ModelConfig
from tunelab.core import launch
from tunelab.core.deferred import torch
from tunelab.models.kinds import MODEL_KINDS, LoadedModel, ModelKind, get_kind
from tunelab.models.pretrained import (
    model_files,
    resolve_model_dir,
    tokenizer_of,
    truncate_layers,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["MODEL_KINDS", "LoadedModel", "check_kind", "load_model", "load_tokenizer",
           "resolve_model_dir", "truncate_layers"]



def load_model(config: ModelConfig, labels: Sequence[str] | None = None,
               kind: str | None = None) -> LoadedModel:
    """Load model + tokenizer as `config.kind` says (`kind` overrides it).

    causal: AutoModelForCausalLM; seq2seq: AutoModelForSeq2SeqLM; both get a pad token and
    left padding for generation. classifier: a sequence-classification head over `labels`
    (the run's eval.labels; required), right padding (see models/kinds.py `load_classifier`).
    """
    model_kind = check_kind(config, kind)
    lm = model_kind.load(config, labels)
    lm.model = placed(lm.model)
    lm.recipe = BaseRecipe(copy.deepcopy(config), tuple(labels) if labels is not None else None,
                           kind)
    return lm


def places_on_gpu() -> bool:
    """Whether `placed` moves models to a GPU here: there is one, and no launcher started this
    process (`launch.launched`: accelerate places the model itself there, DDP on the process's
    own GPU, FSDP shard by shard, so a model larger than one GPU is never whole on one)."""
    return torch.cuda.is_available() and not launch.launched()


def placed(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the GPU where `places_on_gpu`, so evaluation, studies and exports run there
    (not only training); else as loaded (the CPU)."""
    if not places_on_gpu():
        return model
    return model.to(torch.device("cuda", torch.cuda.current_device()))


@dataclass(frozen=True)
class BaseRecipe:
    """`load_model(config, labels, kind)` again, in another process."""

    config: ModelConfig
    labels: tuple[str, ...] | None
    kind: str | None

    def __str__(self) -> str:
        return f"model '{self.config.name}'"

    def load(self) -> LoadedModel:
        return load_model(self.config, self.labels, self.kind)

    def sources(self) -> list[Path] | None:
        return model_files(self.config.name)

    def model_kind(self) -> ModelKind:
        return check_kind(self.config, self.kind)

    def without_weights(self) -> tuple[PreTrainedTokenizerBase, str, ModelKind]:
        kind = self.model_kind()
        return kind.tokenizer_alone(self.config), resolve_model_dir(self.config.name), kind


def check_kind(config: ModelConfig, kind: str | None = None) -> ModelKind:
    """The kind `kind` (else model.kind) names; fails on an unknown name, or a built-in model
    asked to be what it is not."""
    model_kind = get_kind(kind or config.kind)
    model_kind.check_builtin(config)
    return model_kind


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    """Only the tokenizer (data inspection needs no weights)."""
    return tokenizer_of(config.name)
