"""Reading a checkpoint, whatever kind of model it holds.

A model spec resolves to a local directory or a hub id; a tokenizer without a pad token pads
with EOS (decoder LMs ship none, and every batch is padded); `num_layers` cuts every layer
stack for quick runs. The model kinds (models/kinds.py) load through these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.errors import TunelabError
from tunelab.models.builtin import BUILTIN_MODELS, builtin_model_dir


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


def ensure_pad_token(tokenizer: Any) -> None:
    """Pad with EOS when the tokenizer has no pad token of its own."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def truncate_layers(model: Any, num_layers: int) -> None:
    """Keep the first ``num_layers`` blocks of every stack: the decoder of Llama/GPT-2/Gemma-style
    models, the encoder of BERT-style ones, both stacks of T5/BART."""
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
