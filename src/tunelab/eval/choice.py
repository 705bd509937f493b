"""Multiple-choice log-likelihood requests: the log-probability of each choice given a context.

The context is encoded once per item, not once per choice. A batch of contexts runs through
the model once and keeps its key/value cache; the first token of every choice is scored from
the context's last position, and the remaining choice tokens of all choices run in one more
pass against copies of the cached context. Choices of one token (" A", " B") need no second
pass at all. Compared with scoring context + choice as separate sequences
(lm-evaluation-harness), the work drops from choices x (context + choice) tokens to
context + choices x choice tokens. Contexts run as generation's prompts do
(models/prompt_caches.py): a prefix every context of the call starts with (fixed few-shot
examples, as MMLU's dev-set shots, or a long preamble) runs once, and contexts of different
lengths run packed end to end without padding where that saves positions (the logits after
each context then come from that pass).

Tokenisation follows lm-evaluation-harness, so scores are comparable: trailing whitespace of
the context moves to the continuation, the continuation's tokens are those that
encode(context + continuation) adds after encode(context) (an encoder-decoder model's: each
encoded on its own, the context read by the encoder, the continuation scored by the decoder),
and an empty context becomes the BOS (else EOS) token.

A study that scores one system's items in several versions (robustness's perturbations,
bias's counterfactual groups) passes its store of the contexts it scored (`kept`,
models/prompt_caches.py): each context then runs from the first token that differs from every
context stored, and is kept for the contexts after it, as generation does.

Models that feed their own virtual tokens or key/value prefixes (peft prompt/prefix tuning)
can't share a cache this way; they are scored with whole sequences (`shared_context=False`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import Cache

from tunelab.eval.generation import right_pad
from tunelab.eval.result_cache import ResultCache, token_bytes
from tunelab.models.cache import (
    cache_argument,
    output_cache,
    select_cache,
    shares_cache,
)
from tunelab.models.kinds import LoadedModel, fingerprint_of, module_of
from tunelab.models.logits import decoder_logits, token_scores
from tunelab.models.packed import accepts_logits_to_keep
from tunelab.models.pretrained import is_encoder_decoder
from tunelab.models.prompt_caches import PromptCaches, reuses_prompts
from tunelab.models.tokens import IGNORE_INDEX, prefix_token_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_LOGIT_ROWS = 1024
"""Continuation positions whose vocabulary logits are held at once (memory bound)."""


@dataclass
class ChoiceRequest:
    context: list[int]
    """Context token ids (non-empty)."""
    continuations: list[list[int]]
    """Token ids of each choice (each non-empty)."""


@dataclass
class ChoiceResult:
    logprobs: list[float] = field(default_factory=list)
    """Summed log-probability (nats) of each choice's tokens."""
    greedy: list[bool] = field(default_factory=list)
    """Whether greedy decoding from the context would produce exactly that choice's tokens."""


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str,
    add_special_tokens: bool = True, separately: bool = False,
) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) by lm-evaluation-harness's rules (see module doc);
    `separately` (an encoder-decoder model's: the context is the encoder's input, the
    continuation the decoder's) encodes each on its own, special tokens included, as
    lm-evaluation-harness does for such models."""
    if not context:
        cont = list(tokenizer(continuation, add_special_tokens=False).input_ids)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if separately:
        return (list(tokenizer(context, add_special_tokens=add_special_tokens).input_ids),
                list(tokenizer(continuation, add_special_tokens=add_special_tokens).input_ids))
    whole = list(tokenizer(context + continuation, add_special_tokens=add_special_tokens).input_ids)
    context_ids = list(tokenizer(context, add_special_tokens=add_special_tokens).input_ids)
    return context_ids, whole[len(context_ids):]


def score_choices(
    model: torch.nn.Module | LoadedModel,
    requests: Sequence[ChoiceRequest],
    batch_size: int = 8,
    shared_context: bool | None = None,
    results: ResultCache | None = None,
    kept: PromptCaches | None = None,
) -> list[ChoiceResult]:
    """Score every choice of every request; results come back in request order.

    Args:
        model: a module, or a LoadedModel whose weights load on first use
            (models/known_weights.py): only if a request is not looked up.
        batch_size: items (contexts) per forward pass.
        shared_context: encode each context once (default: unless the model can't share it).
        results: look up requests this model already scored (eval/result_cache.py); those
            looked up are noted in `kept`.
        kept: a study's store of contexts (see module doc); each context starts from its
            longest stored prefix and is kept after it ran.
    """
    sharing = kept if kept is not None and shared_context is not False else None

    def store(module: torch.nn.Module) -> PromptCaches | None:
        if sharing is None or not reuses_prompts(module):
            return None
        sharing.bind(fingerprint_of(model))  # filled with other weights: emptied
        return sharing
    if results is None:
        module = module_of(model)
        return _score_choices(module, requests, batch_size, shared_context, store(module))
    ran: set[int] = set()

    def run(indices: list[int]) -> list[tuple[list[float], list[bool]]]:
        ran.update(indices)
        module = module_of(model)
        scored = _score_choices(module, [requests[i] for i in indices], batch_size,
                                shared_context, store(module))
        return [(r.logprobs, r.greedy) for r in scored]
    items = [token_bytes([len(r.context), *r.context, *(t for c in r.continuations
                                                       for t in (-len(c), *c))])
             for r in requests]
    done = results.through(model, "choices", {}, items, run)
    if sharing is not None:  # looked up: a later context may still start from it
        sharing.bind(fingerprint_of(model))
        for index in sorted(set(range(len(requests))) - ran):
            sharing.note(requests[index].context)
    return [ChoiceResult(list(logprobs), list(greedy)) for logprobs, greedy in done]


@torch.no_grad()
def _score_choices(model: torch.nn.Module, requests: Sequence[ChoiceRequest], batch_size: int,
                   shared_context: bool | None, store: PromptCaches | None = None
                   ) -> list[ChoiceResult]:
    model.eval()
    for request in requests:
        if not request.context or any(not c for c in request.continuations):
            raise ValueError("a choice request needs a non-empty context and non-empty choices")
    if shared_context is None:
        shared_context = shares_cache(model)
    if store is None and shared_context and reuses_prompts(model):
        store = PromptCaches(keeps_rows=False)  # this call's: its shared prefix, packing
    if store is not None:
        def run_anchors(anchors: list[tuple[int, ...]]) -> None:
            for start in range(0, len(anchors), batch_size):
                _run_kept(model, anchors[start:start + batch_size], store)
        order = store.plan(model, [r.context for r in requests], run_anchors)
        score: Callable[[torch.nn.Module, list[ChoiceRequest]], list[ChoiceResult]] = \
            partial(_score_kept, store=store)
    else:  # longest first: little padding per batch, and memory peaks at the start
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context))
        score = _score_encoder_decoder if is_encoder_decoder(model) else _score_whole
    results: list[ChoiceResult] = [ChoiceResult() for _ in requests]
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        for row, result in zip(rows, score(model, [requests[i] for i in rows]), strict=True):
            results[row] = result
    return results


def _run_kept(model: torch.nn.Module, contexts: Sequence[Sequence[int]], store: PromptCaches
              ) -> tuple[torch.Tensor, Cache | None, torch.Tensor]:
    """Run `contexts` from their longest stored prefixes (a prefix they all share first) and
    keep them in `store`: (log-probabilities of the token after each context [B, V], the
    batch's cache, its attention mask [B, positions])."""
    laid = store.inputs(model, contexts, whole=True)
    if laid.next_logits is not None:  # every context ran packed: [masked gap | context]
        store.keep(contexts, laid)
        cache: Cache = next(iter(laid.cached.values()))  # type: ignore[assignment]  # a Cache
        return F.log_softmax(laid.next_logits, dim=-1), cache, laid.attention_mask
    # rows [stored | masked gap | own tokens]
    extra: dict[str, object] = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=laid.input_ids[:, laid.width:], attention_mask=laid.attention_mask,
                position_ids=laid.position_ids(), use_cache=True, **laid.cached, **extra)
    store.keep(contexts, laid)
    first = F.log_softmax(out.logits[:, -1].float(), dim=-1)
    return first, output_cache(out), laid.attention_mask


def _score_kept(model: torch.nn.Module, batch: list[ChoiceRequest], store: PromptCaches
                ) -> list[ChoiceResult]:
    first, cache, mask = _run_kept(model, [r.context for r in batch], store)
    return _choice_scores(model, batch, first, cache, mask)


def _choice_scores(model: torch.nn.Module, batch: list[ChoiceRequest], first: torch.Tensor,
                   cache: Cache | None, mask: torch.Tensor) -> list[ChoiceResult]:
    """Every choice's log-probability from the token after each context (`first`, [B, V]),
    its later tokens run against the contexts' `cache` (attention `mask`)."""
    results = [ChoiceResult() for _ in batch]
    rest: list[tuple[int, int]] = []  # (item, choice) whose choice has more than one token
    for b, request in enumerate(batch):
        best = int(first[b].argmax())
        for i, cont in enumerate(request.continuations):
            results[b].logprobs.append(float(first[b, cont[0]]))
            results[b].greedy.append(best == cont[0])
            if len(cont) > 1:
                rest.append((b, i))
    # Remaining tokens: chunks of (item, choice) rows against copies of the cached contexts.
    chunk: list[tuple[int, int]] = []
    budget = 0
    for pair in rest:
        size = len(batch[pair[0]].continuations[pair[1]]) - 1
        if chunk and budget + size > MAX_LOGIT_ROWS:
            _score_rest(model, batch, chunk, cache, mask, results)
            chunk, budget = [], 0
        chunk.append(pair)
        budget += size
    if chunk:
        _score_rest(model, batch, chunk, cache, mask, results)
    return results


def _score_rest(model: torch.nn.Module, batch: list[ChoiceRequest], pairs: list[tuple[int, int]],
                cache: Cache | None, context_mask: torch.Tensor, results: list[ChoiceResult]
                ) -> None:
    """Add the log-probabilities of tokens 2.. of each (item, choice) in `pairs`."""
    device = context_mask.device
    items = torch.tensor([b for b, _ in pairs], device=device)
    conts = [batch[b].continuations[i] for b, i in pairs]
    ids, mask = (t.to(device) for t in right_pad([c[:-1] for c in conts], 0))  # [R, C]: after token 1
    lengths = context_mask.sum(dim=1)[items]  # [R]
    positions = lengths[:, None] + torch.arange(ids.shape[1], device=device)  # [R, C]
    full_mask = torch.cat([context_mask[items], mask], dim=1)  # [R, W + C]
    extra: dict[str, object] = {}
    if accepts_logits_to_keep(model):
        extra["logits_to_keep"] = mask.bool()  # only real positions -> [n_real, V]
    extra[cache_argument(model)] = select_cache(model, cache, items)
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True,
                **extra)
    logits = out.logits if "logits_to_keep" in extra else out.logits[mask.bool()]
    logprobs = F.log_softmax(logits.float(), dim=-1)  # [n_real, V], rows in (pair, position) order
    targets = torch.tensor([t for c in conts for t in c[1:]], device=device)
    token_lp = logprobs.gather(1, targets[:, None])[:, 0]
    token_greedy = logprobs.argmax(dim=-1) == targets
    offset = 0
    for (b, i), cont in zip(pairs, conts, strict=True):
        n = len(cont) - 1
        results[b].logprobs[i] += float(token_lp[offset:offset + n].sum())
        results[b].greedy[i] = results[b].greedy[i] and bool(token_greedy[offset:offset + n].all())
        offset += n


def _score_whole(model: torch.nn.Module, batch: list[ChoiceRequest]) -> list[ChoiceResult]:
    """Each choice as its own sequence context + choice (no shared cache)."""
    device = next(model.parameters()).device
    pairs = [(b, i) for b, r in enumerate(batch) for i in range(len(r.continuations))]
    seqs = [batch[b].context + batch[b].continuations[i] for b, i in pairs]
    results = [ChoiceResult(logprobs=[0.0] * len(r.continuations),
                            greedy=[True] * len(r.continuations)) for r in batch]
    for start in range(0, len(pairs), max(1, len(batch))):
        part = list(range(start, min(start + len(batch), len(pairs))))
        ids, mask = (t.to(device) for t in right_pad([seqs[k] for k in part], 0))
        # Position t predicts token t + 1: the choice's tokens come from end-len-1 .. end-2;
        # only those positions are projected onto the vocabulary (models/logits.py).
        targets = torch.full_like(ids, IGNORE_INDEX)
        for row, k in enumerate(part):
            b, i = pairs[k]
            cont, end = batch[b].continuations[i], len(seqs[k])
            targets[row, end - len(cont) - 1:end - 1] = torch.tensor(cont, device=device)
        scored = token_scores(model, {"input_ids": ids, "attention_mask": mask}, targets,
                              greedy=True)
        for row, k in enumerate(part):
            b, i = pairs[k]
            own = scored.rows == row
            results[b].logprobs[i] = -float(scored.nll[own].sum())
            results[b].greedy[i] = bool(scored.greedy[own].all())
    return results


def _score_encoder_decoder(model: torch.nn.Module, batch: list[ChoiceRequest]
                           ) -> list[ChoiceResult]:
    """An encoder-decoder model's choices: the context is the encoder's input, read once per
    item (per choice under peft prompt learning, whose forward adds its virtual tokens), the
    choice the decoder's labels (the decoder starts from its start token), as
    lm-evaluation-harness scores such models; the decoder runs one row per (item, choice)."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in right_pad([r.context for r in batch], 0))
    once = shares_cache(model)  # peft prompt learning adds its virtual tokens in its forward
    if once:
        get_encoder: Any = model.get_encoder  # Any: transformers' encoder-decoder mixin
        encoded = get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    pairs = [(b, i) for b, r in enumerate(batch) for i in range(len(r.continuations))]
    results = [ChoiceResult(logprobs=[0.0] * len(r.continuations),
                            greedy=[True] * len(r.continuations)) for r in batch]
    for start in range(0, len(pairs), max(1, len(batch))):
        part = pairs[start:start + len(batch)]
        items = torch.tensor([b for b, _ in part], device=device)
        labels = right_pad([batch[b].continuations[i] for b, i in part], IGNORE_INDEX)[0]
        labels = labels.to(device)
        inputs = {"encoder_outputs": (encoded[items],)} if once else {"input_ids": ids[items]}
        logits = decoder_logits(model, labels, attention_mask=mask[items], **inputs)
        logprobs = F.log_softmax(logits, dim=-1)  # [rows, choice tokens, V], as the labels
        scored = labels != IGNORE_INDEX
        token_lp = logprobs.gather(2, labels.clamp(min=0)[..., None])[..., 0]
        right = (logprobs.argmax(dim=-1) == labels) | ~scored
        for row, (b, i) in enumerate(part):
            results[b].logprobs[i] = float(token_lp[row][scored[row]].sum())
            results[b].greedy[i] = bool(right[row].all())
    return results
