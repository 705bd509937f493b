"""Load a model and tokenizer from a built-in alias, a local directory or a hub id."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models.builtin import BUILTIN_MODELS, builtin_model_dir

_DTYPES = {"float32", "bfloat16", "float16"}


@dataclass
class LoadedModel:
    model: Any
    """A transformers PreTrainedModel (causal LM unless kind says otherwise)."""
    tokenizer: Any
    path: str
    """Where the weights came from (a local directory or hub id)."""
    kind: str = "causal"


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


def load_model(config: ModelConfig, kind: str = "causal") -> LoadedModel:
    """Load model + tokenizer; the tokenizer gets a pad token and left padding for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    if config.dtype not in _DTYPES:
        raise TunelabError(f"model.dtype '{config.dtype}': use one of {', '.join(sorted(_DTYPES))}")
    source = resolve_model_dir(config.name)
    transformers_logging.disable_progress_bar()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
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
    if config.num_layers is not None:
        truncate_layers(model, config.num_layers)
    prepare_tokenizer(tokenizer, model)
    return LoadedModel(model=model, tokenizer=tokenizer, path=source, kind=kind)


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
    """Keep the first ``num_layers`` decoder blocks (works for Llama/GPT-2/Gemma-style models)."""
    import torch

    for holder, attr in _layer_lists(model):
        layers = getattr(holder, attr)
        if num_layers < 1 or num_layers > len(layers):
            raise TunelabError(f"model.num_layers={num_layers}: the model has {len(layers)} layers")
        setattr(holder, attr, torch.nn.ModuleList(list(layers)[:num_layers]))
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if hasattr(model.config, key):
                setattr(model.config, key, num_layers)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:num_layers]
        return
    raise TunelabError(f"model.num_layers: cannot find the layer list of {type(model).__name__}")


def _layer_lists(model: Any) -> list[tuple[Any, str]]:
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    found = []
    for holder in (base, getattr(base, "decoder", None)):
        for attr in ("layers", "h", "layer"):
            if holder is not None and isinstance(getattr(holder, attr, None), __import__("torch").nn.ModuleList):
                found.append((holder, attr))
    return found
