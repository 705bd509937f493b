"""Tokenisation with completion-only labels.

The prompt and the completion are tokenised separately and concatenated, so labels are -100
exactly on the prompt tokens and equal the ids on the completion tokens and its EOS. Generation
feeds the same prompt ids, so what is trained is what is asked at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.data.templates import Rendered

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """-100 on prompt positions; the token id on completion positions."""
    prompt_length: int
    truncated: bool = False


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


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training: ids with pad_id, labels with -100, mask with 0."""
    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
