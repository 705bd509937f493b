"""Load a model and tokenizer from a built-in alias, a local directory or a hub id."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.builtin import BUILTIN_MODELS, builtin_model_dir

_DTYPES = {"float32", "bfloat16", "float16"}
MODEL_KINDS = ("causal", "seq2seq", "classifier")
"""model.kind: what the model is and how it trains (see ModelConfig.kind)."""


@dataclass
class LoadedModel:
    model: Any
    """A transformers PreTrainedModel (causal LM unless kind says otherwise)."""
    tokenizer: Any
    path: str
    """Where the weights came from (a local directory or hub id)."""
    kind: str = "causal"
    """causal, seq2seq or classifier (MODEL_KINDS)."""


def resolve_model_dir(name: str) -> str:
    """Turn a model spec into something `from_pretrained` takes (local dir or hub id)."""
    if name in BUILTIN_MODELS:
        return str(builtin_model_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TunelabError(
                f"model '{name}': the directory has no config.json; give an HF model directory "
                f"or one of the built-in models: {', '.join(BUILTIN_MODELS)}"
            )
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id; reachable only where a hub is
    raise TunelabError(
        f"model '{name}': not a built-in model ({', '.join(BUILTIN_MODELS)}), "
        "an existing directory, or a hub id (owner/name)"
    )


def load_model(config: ModelConfig, labels: Sequence[str] | None = None,
               kind: str | None = None) -> LoadedModel:
    """Load model + tokenizer as `config.kind` says (`kind` overrides it).

    causal: AutoModelForCausalLM; seq2seq: AutoModelForSeq2SeqLM; both get a pad token and
    left padding for generation. classifier: a sequence-classification head over `labels`
    (the run's eval.labels; required), right padding (see eval/heads.py `load_classifier`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    kind = kind or config.kind
    check_kind(config, kind)
    if config.dtype not in _DTYPES:
        raise TunelabError(f"model.dtype '{config.dtype}': use one of {', '.join(sorted(_DTYPES))}")
    if kind == "classifier":
        return _load_classifier(config, labels)
    source = resolve_model_dir(config.name)
    transformers_logging.disable_progress_bar()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = auto.from_pretrained(
            source, dtype=getattr(torch, config.dtype), trust_remote_code=False
        )
    except OSError as err:
        if Path(source).exists():
            raise
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise TunelabError(
            f"model '{config.name}': could not load it from the hub{hint}; "
            f"use a local directory or a built-in model ({', '.join(BUILTIN_MODELS)})"
        ) from err
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        raise TunelabError(
            f"model '{config.name}': {auto.__name__} cannot load it, so it is not a {kind} "
            f"model; set model.kind to what it is ({', '.join(MODEL_KINDS)})"
        ) from None
    if config.num_layers is not None:
        truncate_layers(model, config.num_layers)
    prepare_tokenizer(tokenizer, model)
    return LoadedModel(model=model, tokenizer=tokenizer, path=source, kind=kind)


def check_kind(config: ModelConfig, kind: str | None = None) -> None:
    """Fail on an unknown model.kind, or a built-in model asked to be what it is not."""
    kind = kind or config.kind
    if kind not in MODEL_KINDS:
        raise TunelabError(f"model.kind '{kind}': unknown; choose one of {', '.join(MODEL_KINDS)}")
    builtin = BUILTIN_MODELS.get(config.name)
    if builtin is not None and builtin.kind == "encoder" and kind != "classifier":
        raise TunelabError(f"model.kind '{kind}': model '{config.name}' is an encoder without a "
                           "language-model head; set model.kind: classifier (with eval.labels)")
    if builtin is not None and builtin.kind == "causal" and kind == "seq2seq":
        raise TunelabError(f"model.kind 'seq2seq': model '{config.name}' is a causal LM; set "
                           "model.kind: causal (or classifier)")


def _load_classifier(config: ModelConfig, labels: Sequence[str] | None) -> LoadedModel:
    """A `*ForSequenceClassification` over `labels`; its head is trained (and saved) by the run."""
    from tunelab.eval.heads import load_classifier

    if not labels:
        raise TunelabError("model.kind classifier needs eval.labels: the class names in class "
                           "order, e.g. eval.labels=[positive,negative]")
    if len(labels) < 2:
        raise TunelabError(f"eval.labels {list(labels)}: a classifier needs at least 2 labels")
    with warnings.catch_warnings():  # "the head is newly initialised": the run trains it
        warnings.filterwarnings("ignore", message=".*newly initialised.*")
        return load_classifier(config, [str(label) for label in labels])


def load_tokenizer(config: ModelConfig) -> Any:
    """Only the tokenizer (data inspection needs no weights)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(config.name), trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    """Ensure a pad token and left padding (batched generation needs the prompt at the right)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def truncate_layers(model: Any, num_layers: int) -> None:
    """Keep the first ``num_layers`` blocks of every stack: the decoder of Llama/GPT-2/Gemma-style
    models, the encoder of BERT-style ones, both stacks of T5/BART."""
    import torch

    stacks = _layer_lists(model)
    if not stacks:
        raise TunelabError(f"model.num_layers: cannot find the layer list of {type(model).__name__}")
    for holder, attr in stacks:
        layers = getattr(holder, attr)
        if num_layers < 1 or num_layers > len(layers):
            raise TunelabError(f"model.num_layers={num_layers}: the model has {len(layers)} layers")
    for holder, attr in stacks:
        setattr(holder, attr, torch.nn.ModuleList(list(getattr(holder, attr))[:num_layers]))
    for key in ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers",
                "encoder_layers", "decoder_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, num_layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]


def _layer_lists(model: Any) -> list[tuple[Any, str]]:
    import torch

    base = (getattr(model, "model", None) or getattr(model, "transformer", None)
            or getattr(model, "base_model", None) or model)
    found = []
    for holder in (base, getattr(base, "encoder", None), getattr(base, "decoder", None)):
        for attr in ("layers", "h", "layer", "block"):
            if holder is not None and isinstance(getattr(holder, attr, None), torch.nn.ModuleList):
                found.append((holder, attr))
    if any(h is base for h, _ in found):  # a decoder LM's own stack; ignore nested ones
        found = [(h, a) for h, a in found if h is base]
    return found
