"""Log-likelihood requests: summed NLL of completion tokens given their prompts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, collate
from tunelab.models.logits import row_sums, shifted, token_scores


@torch.no_grad()
def completion_nll(
    model: torch.nn.Module, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int = 8
) -> list[tuple[float, int]]:
    """(summed NLL in nats, number of tokens) of each example's labelled tokens."""
    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size],
                                                      pad_id).items()}
        if examples[start].kind.encoder_decoder:  # the decoder's logits align with the labels
            logits = model(**batch).logits.float()
            labels = batch["labels"]
            nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            mask = labels != IGNORE_INDEX
            results += [(float(s), int(c)) for s, c in zip((nll * mask).sum(dim=1),
                                                            mask.sum(dim=1), strict=True)]
            continue
        # causal: position t predicts token t+1; only those positions are projected
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        scored = token_scores(model, inputs, shifted(batch["labels"]))
        sums, counts = row_sums(scored, len(batch["input_ids"]))
        results += list(zip(sums, counts, strict=True))
    return results
