"""The `classification` output type: a sequence-classification head picks a label.

The model is of a kind with a classification head (`ModelKind.has_classification_head`: a
fine-tuned run with a task head, or a base model given a fresh head by models/kinds.py
`load_classifier`, which scores at chance until trained). Class i is the label the model's
config names (`id2label`) when those are real names, else the task's i-th label.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from tunelab.core.errors import TunelabError
from tunelab.eval.result_cache import ResultCache, tokenizer_fingerprint
from tunelab.models.kinds import LoadedModel
from tunelab.models.pretrained import ensure_pad_token, model_config


def class_names(model: torch.nn.Module, labels: Sequence[str]) -> list[str]:
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


def classify(
    lm: LoadedModel, texts: Sequence[str], labels: Sequence[str], batch_size: int = 8,
    max_length: int = 512, results: ResultCache | None = None,
) -> tuple[list[str], list[list[float]]]:
    """(predicted label, class probabilities) of each text; with `results`, texts this model
    already classified are looked up (eval/result_cache.py)."""
    if results is None:
        return _classify(lm, texts, labels, batch_size, max_length)

    def run(indices: list[int]) -> list[tuple[str, list[float]]]:
        found = _classify(lm, [texts[i] for i in indices], labels, batch_size, max_length)
        return list(zip(*found, strict=True))
    settings = {"labels": list(labels), "max_length": max_length,
                "classes": class_names(lm.model, labels),
                "tokenizer": tokenizer_fingerprint(lm.tokenizer)}
    done = results.through(lm.model, "classify", settings, [t.encode("utf-8") for t in texts],
                           run)
    return [str(label) for label, _ in done], [list(probs) for _, probs in done]


@torch.no_grad()
def _classify(lm: LoadedModel, texts: Sequence[str], labels: Sequence[str], batch_size: int,
              max_length: int) -> tuple[list[str], list[list[float]]]:
    if not lm.kind.has_classification_head:
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
    ensure_pad_token(tokenizer)
    config = model_config(model)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
    predictions: list[str] = []
    probabilities: list[list[float]] = []
    with tqdm(total=len(texts), desc="classify", unit="ex", leave=False) as bar:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()  # [B, classes]
            probs = logits.softmax(dim=-1)
            predictions += [names[i] for i in probs.argmax(dim=-1).tolist()]
            probabilities += probs.tolist()
            bar.update(len(enc["input_ids"]))
    return predictions, probabilities
