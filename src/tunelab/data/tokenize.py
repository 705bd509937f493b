"""Tokenisation with completion-only labels, for each model kind.

causal: the prompt and the completion are tokenised separately and concatenated, so labels are
-100 exactly on the prompt tokens and equal the ids on the completion tokens and its EOS.
Generation feeds the same prompt ids, so what is trained is what is asked at inference.
seq2seq: the prompt ids (with the tokenizer's special tokens) are the encoder input and the
labels are the completion + EOS alone (the decoder never sees the prompt, so nothing is masked).
classifier: the input text's ids and one label, the class index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.data.records import Record
from tunelab.data.templates import Rendered, Template, classifier_text
from tunelab.errors import TunelabError

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """-100 on prompt positions; the token id on completion positions."""
    prompt_length: int
    truncated: bool = False
    kind: str = "causal"
    """causal (labels align with input_ids), seq2seq (input_ids: the encoder input; labels: the
    decoder targets) or classifier (labels: [class index])."""


def encode_prompt(rendered: Rendered, tokenizer: Any) -> list[int]:
    """Token ids of the prompt exactly as training saw them."""
    return list(tokenizer(rendered.prompt, add_special_tokens=not rendered.special_in_text).input_ids)


def encode_completion(rendered: Rendered, tokenizer: Any) -> list[int]:
    """Token ids of the completion, ending in EOS (added unless the text already ends with it)."""
    ids = list(tokenizer(rendered.completion, add_special_tokens=False).input_ids)
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def tokenize_example(rendered: Rendered, tokenizer: Any, max_length: int) -> TokenizedExample:
    """Tokenise prompt + completion; cut the prompt from the left when too long."""
    prompt_ids = encode_prompt(rendered, tokenizer)
    completion_ids = encode_completion(rendered, tokenizer)
    truncated = False
    if len(completion_ids) > max_length - 1:
        completion_ids = completion_ids[: max(1, max_length // 2)]
        truncated = True
    budget = max_length - len(completion_ids)
    if len(prompt_ids) > budget:
        prompt_ids = prompt_ids[len(prompt_ids) - budget:]
        truncated = True
    return TokenizedExample(
        input_ids=prompt_ids + completion_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        prompt_length=len(prompt_ids),
        truncated=truncated,
    )


def tokenize_seq2seq(rendered: Rendered, tokenizer: Any, max_length: int) -> TokenizedExample:
    """Encoder input = the prompt ids, labels = completion + EOS; each cut to max_length (the
    prompt from the left, as for causal models)."""
    prompt_ids = encode_prompt(rendered, tokenizer)
    completion_ids = encode_completion(rendered, tokenizer)
    truncated = len(prompt_ids) > max_length or len(completion_ids) > max_length
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - max_length):]
    return TokenizedExample(input_ids=prompt_ids, labels=completion_ids[:max_length],
                            prompt_length=len(prompt_ids), truncated=truncated, kind="seq2seq")


def label_index(text: str, labels: Sequence[str], origin: str) -> int:
    """The class of a label text (compared as the label metrics compare: stripped, lowercased,
    trailing punctuation dropped); a text that is no label is an error naming the record."""
    from tunelab.eval.metrics_label import normalize_label  # the data layer loads first

    wanted = normalize_label(text)
    for i, label in enumerate(labels):
        if normalize_label(str(label)) == wanted:
            return i
    raise TunelabError(f"{origin or 'a record'}: output {text!r} is not one of eval.labels "
                       f"{list(labels)}; fix the record or add its label to eval.labels")


def tokenize_classification(text: str, label: int, tokenizer: Any, max_length: int
                            ) -> TokenizedExample:
    """The text's ids (special tokens added, cut from the right at max_length, as the
    classification output type reads it) and its class index."""
    ids = list(tokenizer(text).input_ids)
    truncated = len(ids) > max_length
    if truncated:
        ids = list(tokenizer(text, truncation=True, max_length=max_length).input_ids)
    return TokenizedExample(input_ids=ids, labels=[label], prompt_length=len(ids),
                            truncated=truncated, kind="classifier")


def tokenize_record(record: Record, template: Template, tokenizer: Any, kind: str, max_length: int,
                    labels: Sequence[str] | None = None) -> TokenizedExample:
    """A record as the model kind trains on it (see the module docstring); a classifier's
    label is the index of the record's output in `labels` (eval.labels)."""
    if kind == "classifier":
        output = record.messages[-1]["content"] if record.messages else record.output
        label = label_index(output, labels or [], record.origin)
        return tokenize_classification(classifier_text(record, template), label, tokenizer,
                                       max_length)
    if kind == "seq2seq":
        return tokenize_seq2seq(template.render(record), tokenizer, max_length)
    return tokenize_example(template.render(record), tokenizer, max_length)


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training: ids with pad_id, labels with -100, mask with 0.

    seq2seq labels are padded to the longest label sequence; classifier labels are one class
    index per example."""
    kinds = {ex.kind for ex in batch}
    if len(kinds) != 1:
        raise ValueError(f"a batch mixes example kinds {sorted(kinds)}")
    kind = kinds.pop()
    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    label_width = width if kind == "causal" else max(len(ex.labels) for ex in batch)
    labels = torch.full((len(batch), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :len(ex.labels)] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    if kind == "classifier":
        labels = labels[:, 0]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
