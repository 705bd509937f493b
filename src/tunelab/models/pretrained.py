"""Reading a checkpoint, whatever kind of model it holds.

A model spec resolves to a local directory or a hub id; the weights load with a transformers
Auto class (a language model's, or a sequence-classification head's over given labels); a
tokenizer without a pad token pads with EOS (decoder LMs ship none, and every batch is
padded); `num_layers` cuts every layer stack for quick runs. The model kinds
(models/kinds.py) load through these and finish the model as their kind needs.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from tunelab.config import ModelConfig
from tunelab.core.deferred import deferred, torch, transformers
from tunelab.core.errors import TunelabError, first_line
from tunelab.models.builtin import BUILTIN_MODELS, builtin_model_dir

if TYPE_CHECKING:
    from huggingface_hub import errors as hub_errors
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
else:  # read only when a load fails
    hub_errors = deferred("huggingface_hub.errors")


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
        try:
            json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f" line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
            raise TunelabError(f"model '{name}': {path / 'config.json'}{where} is not valid "
                               f"JSON ({err}); the model directory is damaged") from None
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id; reachable only where a hub is
    raise TunelabError(
        f"model '{name}': not a built-in model ({', '.join(BUILTIN_MODELS)}), "
        "an existing directory, or a hub id (owner/name)"
    )


def model_files(name: str) -> list[Path] | None:
    """The files `from_pretrained` reads from the model folder `name` resolves to: those at
    its top level (configs, tokenizer, weights and their index; not a repository's `.git`,
    `original/` or `onnx/` folders), sorted; None for a hub id."""
    source = Path(resolve_model_dir(name))
    if not source.is_dir():
        return None
    return sorted(path for path in source.iterdir()
                  if path.is_file() and not path.name.startswith("."))


def tokenizer_of(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of model `name` alone (no weights), with a pad token."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve_model_dir(name),
                                                           trust_remote_code=False)
    ensure_pad_token(tokenizer)
    return tokenizer


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with EOS when the tokenizer has no pad token of its own."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def model_config(model: torch.nn.Module) -> PreTrainedConfig:
    """A transformers model's config (a peft wrapper hands on its base model's); torch
    annotates the attributes of a plain `nn.Module` as tensors or modules."""
    return cast("PreTrainedConfig", model.config)


def is_encoder_decoder(model: object) -> bool:
    """Whether the model (a module, or a `models.kinds.LoadedModel`, which answers from its
    config without loading deferred weights) reads its input with an encoder and writes with a
    decoder (T5, BART): `generate` then returns decoder sequences, a choice is the decoder's
    labels, and no prompt states can be stored or packed."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def load_pretrained(config: ModelConfig, auto_class: str, kind: str, kinds: Sequence[str]
                    ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, str]:
    """(tokenizer, model, source) of a checkpoint loaded with the transformers class
    `auto_class`; a hub miss, or a checkpoint that class cannot load (so it is not a `kind`
    model), is a one-line error naming the fix."""
    source = resolve_model_dir(config.name)
    transformers.logging.disable_progress_bar()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    auto = getattr(transformers, auto_class)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model = auto.from_pretrained(
            source, dtype=getattr(torch, config.dtype), trust_remote_code=False
        )
    except OSError as err:
        if Path(source).exists():
            first = first_line(err)
            raise TunelabError(f"model '{config.name}': {source} cannot be loaded ({first}); "
                               "the model directory is incomplete or damaged") from None
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise TunelabError(
            f"model '{config.name}': could not load it from the hub{hint}; "
            f"use a local directory or a built-in model ({', '.join(BUILTIN_MODELS)})"
        ) from err
    except (ValueError, hub_errors.StrictDataclassError) as err:
        if "Unrecognized configuration class" not in str(err):
            if not Path(source).exists():
                raise
            first = first_line(err)
            raise TunelabError(f"model '{config.name}': {source} cannot be loaded ({first}); "
                               "a file of the model directory holds a value it cannot take "
                               "(config.json?)") from None
        raise TunelabError(
            f"model '{config.name}': {auto_class} cannot load it, so it is not a {kind} "
            f"model; set model.kind to what it is ({', '.join(kinds)})"
        ) from None
    return tokenizer, model, source


def load_with_head(config: ModelConfig, auto_class: str, labels: Sequence[str],
                   head_seed: int | None = None
                   ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, str]:
    """(tokenizer, model, source) of a checkpoint loaded with the head class `auto_class`
    (`AutoModelForSequenceClassification`) over `labels` (id2label names them); a head the
    checkpoint lacks is initialised fresh, and a warning says so. With `head_seed` the fresh
    head is drawn from that seed (the same head on every load; torch's own random state is
    left as it was), else from torch's current random state (training seeds it)."""
    logging = transformers.logging
    source = resolve_model_dir(config.name)
    logging.disable_progress_bar()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the load report lists the fresh head's weights
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[],
                                                              enabled=head_seed is not None):
            warnings.simplefilter("ignore")
            if head_seed is not None:
                torch.manual_seed(head_seed)
            model, info = getattr(transformers, auto_class).from_pretrained(
                source, num_labels=len(labels), dtype=getattr(torch, config.dtype),
                id2label=dict(enumerate(labels)), output_loading_info=True,
                label2id={label: i for i, label in enumerate(labels)})
    finally:
        logging.set_verbosity(verbosity)
    if info.get("missing_keys"):  # stacklevel 3: the caller of models.kinds.load_classifier
        warnings.warn(f"model '{config.name}': the classification head ({', '.join(sorted(info['missing_keys']))}) "
                      "is newly initialised; it scores at chance until a run trains it", stacklevel=3)
    return tokenizer, model, source


def truncate_layers(model: PreTrainedModel, num_layers: int) -> None:
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


def _layer_lists(model: torch.nn.Module) -> list[tuple[object, str]]:
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
