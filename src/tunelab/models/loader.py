"""Load a model and tokenizer from a built-in alias, a local directory or a hub id, as the
model kind says (models/kinds.py)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tunelab.config import ModelConfig
from tunelab.models.kinds import MODEL_KINDS, LoadedModel, ModelKind, get_kind
from tunelab.models.pretrained import ensure_pad_token, resolve_model_dir, truncate_layers

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
    return model_kind.load(config, labels)


def check_kind(config: ModelConfig, kind: str | None = None) -> ModelKind:
    """The kind `kind` (else model.kind) names; fails on an unknown name, or a built-in model
    asked to be what it is not."""
    model_kind = get_kind(kind or config.kind)
    model_kind.check_builtin(config)
    return model_kind


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    """Only the tokenizer (data inspection needs no weights)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(config.name), trust_remote_code=False)
    ensure_pad_token(tokenizer)
    return tokenizer
