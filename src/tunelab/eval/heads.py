"""The `classification` output type: a sequence-classification head picks a label.

The model is a `*ForSequenceClassification` (a fine-tuned run with a task head, or a base
model given a fresh head, which scores at chance until trained). Class i is the label the
model's config names (`id2label`) when those are real names, else the task's i-th label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from tunelab.config import ModelConfig
from tunelab.errors import TunelabError
from tunelab.models import LoadedModel


def is_classifier(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def load_classifier(config: ModelConfig, labels: Sequence[str]) -> LoadedModel:
    """A base model with a sequence-classification head for `labels` (fresh if it has none)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from tunelab.models.loader import resolve_model_dir, truncate_layers

    source = resolve_model_dir(config.name)
    transformers_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the load report lists the fresh head's weights
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=len(labels), dtype=getattr(torch, config.dtype),
                id2label=dict(enumerate(labels)), output_loading_info=True,
                label2id={label: i for i, label in enumerate(labels)})
    finally:
        transformers_logging.set_verbosity(verbosity)
    if info.get("missing_keys"):
        warnings.warn(f"model '{config.name}': the classification head ({', '.join(sorted(info['missing_keys']))}) "
                      "is newly initialised; it scores at chance until a run trains it", stacklevel=2)
    if config.num_layers is not None:
        truncate_layers(model, config.num_layers)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder classifiers read the last non-pad token; they need to know the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    return LoadedModel(model=model, tokenizer=tokenizer, path=source, kind="classifier")


def class_names(model: Any, labels: Sequence[str]) -> list[str]:
    """The label of each output class."""
    config = model.config
    n = int(getattr(config, "num_labels", len(labels)))
    names = [str(getattr(config, "id2label", {}).get(i, "")) for i in range(n)]
    if all(name and not name.startswith("LABEL_") for name in names):
        return names
    if n != len(labels):
        raise TunelabError(
            f"the model's head has {n} classes but the task lists {len(labels)} labels "
            f"({', '.join(labels)}); give the task one label per class, in class order"
        )
    return list(labels)


@torch.no_grad()
def classify(
    lm: LoadedModel, texts: Sequence[str], labels: Sequence[str], batch_size: int = 8,
    max_length: int = 512,
) -> tuple[list[str], list[list[float]]]:
    """(predicted label, class probabilities) of each text."""
    if not is_classifier(lm.model):
        raise TunelabError(
            "output_type classification needs a model with a classification head (a run "
            "trained with one, or a base model: tunelab loads it with a fresh head); for a causal "
            "LM use output_type multiple_choice over the labels"
        )
    model = lm.model
    model.eval()
    names = class_names(model, labels)
    device = next(model.parameters()).device
    tokenizer = lm.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    predictions: list[str] = []
    probabilities: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # [B, classes]
        probs = logits.softmax(dim=-1)
        predictions += [names[i] for i in probs.argmax(dim=-1).tolist()]
        probabilities += probs.tolist()
    return predictions, probabilities
