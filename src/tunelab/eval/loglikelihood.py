"""Log-likelihood requests: summed NLL of completion tokens given their prompts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tunelab.data.tokenize import IGNORE_INDEX, TokenizedExample, collate
from tunelab.eval.result_cache import ResultCache, token_bytes
from tunelab.models.kinds import LoadedModel, module_of
from tunelab.models.logits import decoder_logits, row_sums, shifted, token_scores


def completion_nll(
    model: torch.nn.Module | LoadedModel, examples: Sequence[TokenizedExample], pad_id: int,
    batch_size: int = 8, results: ResultCache | None = None,
) -> list[tuple[float, int]]:
    """(summed NLL in nats, number of tokens) of each example's labelled tokens; with
    `results`, those this model already scored are looked up (eval/result_cache.py), and a
    deferred LoadedModel's weights load only if one is not."""
    if results is None:
        return _completion_nll(module_of(model), examples, pad_id, batch_size)

    def run(indices: list[int]) -> list[tuple[float, int]]:
        return _completion_nll(module_of(model), [examples[i] for i in indices], pad_id,
                               batch_size)
    items = [token_bytes([len(e.input_ids), *e.input_ids, *e.labels]) for e in examples]
    return [(float(nll), int(n)) for nll, n in results.through(model, "completion_nll", {},
                                                                items, run)]


@torch.no_grad()
def _completion_nll(model: torch.nn.Module, examples: Sequence[TokenizedExample], pad_id: int,
                    batch_size: int) -> list[tuple[float, int]]:
    model.eval()
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size],
                                                      pad_id).items()}
        if examples[start].kind.encoder_decoder:  # the decoder's logits align with the labels
            labels = batch["labels"]
            logits = decoder_logits(model, labels, input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"])
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
