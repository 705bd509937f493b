"""Log-likelihood requests: summed NLL of completion tokens given their prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, collate


@torch.no_grad()
def completion_nll(
    model: Any, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int = 8
) -> list[tuple[float, int]]:
    """(summed NLL in nats, number of tokens) of each example's labelled tokens."""
    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id)
        if examples[start].kind.encoder_decoder:  # the decoder's logits align with the labels
            labels = batch["labels"].to(device)
            logits = model(input_ids=batch["input_ids"].to(device), labels=labels,
                           attention_mask=batch["attention_mask"].to(device)).logits.float()
        else:
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            # Prompt tuning returns logits for its virtual tokens too: keep the input's positions.
            logits = logits[:, logits.shape[1] - batch["input_ids"].shape[1]:]
            # Position t predicts token t+1: logits[:, :-1] against labels[:, 1:].
            logits = logits[:, :-1].float()  # [batch, seq-1, vocab]
            labels = batch["labels"][:, 1:].to(device)  # [batch, seq-1]
        nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        mask = labels != IGNORE_INDEX
        sums = (nll * mask).sum(dim=1)
        counts = mask.sum(dim=1)
        results += [(float(s), int(c)) for s, c in zip(sums, counts, strict=True)]
    return results
