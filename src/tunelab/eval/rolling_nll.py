"""Rolling log-likelihood of whole texts (perplexity, bits per byte) with windows and a stride.

A text of n tokens gets a prefix token (BOS, else EOS) so its first token is scored too; the
input sequence is then [prefix] + tokens, and input position j predicts token j. Windows of at
most `max_length` positions end `stride` tokens apart; each window scores only the tokens no
earlier window scored, with all the context the window holds:

    max_length 4, stride 4:  inputs [P t0 t1 t2] -> t0..t3,  [t2 t3 t4 t5] -> t4 t5 (if n = 6)
    max_length 4, stride 2:  inputs [P t0 t1 t2] -> t0..t3,  [t1 t2 t3 t4] -> t4 t5 ...

With stride = max_length this is lm-evaluation-harness's `loglikelihood_rolling` (disjoint
windows, the last one filled with full context). Every token is predicted exactly once, so
sum NLL / tokens is the text's perplexity exponent, and sum NLL / (ln 2 * bytes) its bits
per byte.

An encoder-decoder model reads a window as lm-evaluation-harness's `hf` model reads it: the
encoder takes the window's context (the tokens before its first scored one: [prefix] in the
first window) and the decoder scores the window's tokens from its start token. The encoder
never sees a token it is scored on (run whole, it would read the text both ways).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tunelab.eval.choice import prefix_token_id
from tunelab.eval.generation import right_pad
from tunelab.eval.result_cache import ResultCache, token_bytes
from tunelab.models.kinds import LoadedModel, module_of
from tunelab.models.logits import decoder_logits, row_sums, token_scores
from tunelab.models.pretrained import is_encoder_decoder
from tunelab.models.tokens import IGNORE_INDEX

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Window:
    doc: int
    begin: int
    """First input position (in [prefix] + tokens)."""
    end: int
    """One past the last input position."""
    first_scored: int
    """Input positions before this one give context only (an earlier window scored them)."""


@dataclass
class RollingScore:
    nll: float
    """Summed negative log-likelihood in nats."""
    tokens: int
    bytes: int
    words: int


def windows_for(doc: int, n_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The windows that score n_tokens tokens (see the module docstring)."""
    if max_length < 1 or not 1 <= stride <= max_length:
        raise ValueError(f"need 1 <= stride ({stride}) <= max_length ({max_length})")
    windows: list[Window] = []
    scored = 0
    end = min(max_length, n_tokens)
    while scored < n_tokens:
        windows.append(Window(doc, max(0, end - max_length), end, scored))
        scored = end
        end = min(end + stride, n_tokens)
    return windows


def count_words(text: str) -> int:
    """Words as lm-evaluation-harness counts them (split on runs of whitespace)."""
    return len(re.split(r"\s+", text))


def rolling_loglikelihood(
    model: torch.nn.Module | LoadedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    stride: int | None = None,
    batch_size: int = 8,
    results: ResultCache | None = None,
) -> list[RollingScore]:
    """Summed NLL of every token of every text, plus the counts metrics normalise by; with
    `results`, documents this model already scored in these windows are looked up (a
    deferred LoadedModel's weights load only if one is not)."""
    prefix = prefix_token_id(tokenizer)
    sequences = [[prefix] + list(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    if results is None:
        nll = rolling_nll_of_ids(module_of(model), sequences, max_length, stride, batch_size)
    else:
        def run(indices: list[int]) -> list[float]:
            return rolling_nll_of_ids(module_of(model), [sequences[i] for i in indices],
                                      max_length, stride, batch_size)
        settings: dict[str, object] = {"max_length": max_length, "stride": stride or max_length}
        if is_encoder_decoder(model):  # not what BART scored before its encoder read contexts
            settings["encoder"] = "context"
        nll = [float(x) for x in results.through(model, "rolling_nll", settings,
                                                  [token_bytes(seq) for seq in sequences], run)]
    return [RollingScore(nll[d], len(seq) - 1, len(texts[d].encode("utf-8")), count_words(texts[d]))
            for d, seq in enumerate(sequences)]


@torch.no_grad()
def rolling_nll_of_ids(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    max_length: int,
    stride: int | None = None,
    batch_size: int = 8,
) -> list[float]:
    """Summed NLL of every id after the first of each sequence ([prefix] + a text's token ids,
    however they were encoded), in the windows of the module docstring."""
    model.eval()
    stride = stride or max_length
    windows = [w for d, seq in enumerate(sequences)
               for w in windows_for(d, len(seq) - 1, max_length, stride)]
    nll = [0.0] * len(sequences)
    windows.sort(key=lambda w: -(w.end - w.begin))  # similar lengths share a batch
    score = _encoder_decoder_sums if is_encoder_decoder(model) else _causal_sums
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        for w, total in zip(batch, score(model, sequences, batch), strict=True):
            nll[w.doc] += total
    return nll


def _causal_sums(model: torch.nn.Module, sequences: Sequence[Sequence[int]],
                 batch: Sequence[Window]) -> list[float]:
    """Each window's summed NLL, its input positions run in one row."""
    device = next(model.parameters()).device
    width = max(w.end - w.begin for w in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, w in enumerate(batch):
        seq = sequences[w.doc]
        n = w.end - w.begin
        ids[row, :n] = torch.tensor(list(seq[w.begin:w.end]))
        mask[row, :n] = 1
        # Input position p predicts seq[p + 1]; score p in [first_scored, end).
        positions = slice(w.first_scored - w.begin, n)
        targets[row, positions] = torch.tensor(list(seq[w.first_scored + 1:w.end + 1]))
    # only the scored positions are projected onto the vocabulary (models/logits.py)
    scored = token_scores(model, {"input_ids": ids.to(device),
                                  "attention_mask": mask.to(device)}, targets.to(device))
    return row_sums(scored, len(batch))[0]


def _encoder_decoder_sums(model: torch.nn.Module, sequences: Sequence[Sequence[int]],
                          batch: Sequence[Window]) -> list[float]:
    """Each window's summed NLL: the encoder reads the window's context, seq[begin,
    first_scored], the decoder is scored on seq(first_scored, end] (module docstring)."""
    device = next(model.parameters()).device
    ids, mask = right_pad([sequences[w.doc][w.begin:w.first_scored + 1] for w in batch], 0)
    labels, _ = right_pad([sequences[w.doc][w.first_scored + 1:w.end + 1] for w in batch],
                          IGNORE_INDEX)
    labels = labels.to(device)
    logits = decoder_logits(model, labels, input_ids=ids.to(device), attention_mask=mask.to(device))
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                          reduction="none")
    return nll.double().sum(dim=1).tolist()
