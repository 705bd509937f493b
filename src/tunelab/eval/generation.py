"""Batched generation: left padding (right padding of the encoder input for encoder-decoder
models), length-sorted batches, greedy or sampling, stop at EOS or at stop strings.

No prompt token runs twice where the model can take a cache (models/prompt_caches.py): a
token prefix shared by the prompts (fixed few-shot examples, an instruction or preamble, a
chat template's system turn) runs once for the call, and inside a study's `kept_prompts`
block every prompt run is kept, so a later prompt that starts the same way (a perturbed
version of an item) runs only from its first new token. Rows are [stored positions | masked
gap | own tokens], so every token keeps the position and the attention it has in a left-padded
whole prompt: the same tokens come out (tested token for token). Where a batch's prompts
differ in length, they run first packed end to end without padding (`models/packed.py`): in
greedy decoding every prompt token, the first new token is the argmax of the logits after each
prompt (what `generate` picks when it applies no logits processor, `_picks_argmax`), and
`generate` continues from it; otherwise all but each prompt's last token, and rows are
[stored | packed | masked gap | last token]. Encoder-decoder models (the encoder reads the
prompt both ways) and peft prompt learning (its virtual tokens own the cache) run whole prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm
from transformers.generation import (
    EosTokenCriteria,
    GenerationMode,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

from tunelab.config import GenerationConfig
from tunelab.eval.result_cache import ResultCache, token_bytes, tokenizer_fingerprint
from tunelab.models.kinds import LoadedModel, fingerprint_of, module_of
from tunelab.models.pretrained import is_encoder_decoder
from tunelab.models.prompt_caches import BatchInputs, PromptCaches, reuses_prompts
from tunelab.models.tokens import decode

if TYPE_CHECKING:
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers import PreTrainedTokenizerBase


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop string."""
    cut = len(text)
    for stop in stops:
        if stop and (at := text.find(stop)) != -1:
            cut = min(cut, at)
    return text[:cut]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [batch, longest], padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(list(prompt))
            mask[row, width - len(prompt):] = 1
    return ids, mask


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both [batch, longest], padded on the right (an encoder's
    input: positions then count from the first real token, as in training)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, :len(prompt)] = 1
    return ids, mask


def generate(
    model: torch.nn.Module | LoadedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    desc: str = "generate",
    strip: bool = True,
    hit_limit: list[bool] | None = None,
    share_prefix: bool = True,
    results: ResultCache | None = None,
    kept: PromptCaches | None = None,
) -> list[str]:
    """Generate a completion for each prompt (token ids), returned in the input order.

    Prompts are sorted by length so each batch pads little; `strip` trims whitespace around
    each prediction (lm-evaluation-harness wants it kept). For encoder-decoder models the
    prompt is the encoder input (right-padded) and the output holds only the decoder's tokens
    after its start token, so nothing of the prompt is echoed. `hit_limit`, when given, is
    filled with whether each completion ran to max_new_tokens without an end token or a stop
    string (an answer cut off, not finished). `share_prefix` runs a shared token prefix once
    wherever the model can take a cache, and starts each prompt from `kept` (a study's store of
    the prompts it ran) where given; False runs whole prompts. With `results` (greedy decoding
    only), a prompt this model already completed under these settings is looked up, not run
    (eval/result_cache.py), and noted in `kept`; without, a prompt repeated in the call runs
    once (greedy decoding). `model` may be a LoadedModel whose weights load on first use
    (models/known_weights.py): they load only if a prompt is not looked up."""
    ran: set[int] = set()

    def run(indices: list[int]) -> list[tuple[str, bool]]:
        ran.update(indices)
        module = module_of(model)
        caches = None
        if share_prefix and reuses_prompts(module):
            if kept is not None:  # a study's store: emptied if filled with other weights
                kept.bind(fingerprint_of(model))
                caches = kept
            else:
                caches = PromptCaches(keeps_rows=False)  # this call's: new, nothing to check
        return _generate([prompts[i] for i in indices], module, tokenizer, config, desc, caches)
    if results is not None and not config.do_sample:
        settings = {"max_new_tokens": config.max_new_tokens, "stop": list(config.stop),
                    "tokenizer": tokenizer_fingerprint(tokenizer)}
        done = [tuple(x) for x in results.through(model, "generate", settings,
                                                   [token_bytes(p) for p in prompts], run)]
        if kept is not None and share_prefix:  # looked up: a later prompt may start from it
            kept.bind(fingerprint_of(model))
            for index in sorted(set(range(len(prompts))) - ran):
                kept.note(prompts[index])
    elif not config.do_sample:  # a prompt repeated (an item left as it was) runs once
        first: dict[tuple[int, ...], int] = {}
        for index, prompt in enumerate(prompts):
            first.setdefault(tuple(prompt), index)
        once = dict(zip(first.values(), run(list(first.values())), strict=True))
        done = [once[first[tuple(prompt)]] for prompt in prompts]
    else:
        done = run(list(range(len(prompts))))
    if hit_limit is not None:
        hit_limit[:] = [limited for _, limited in done]
    return [text.strip() if strip else text for text, _ in done]


@torch.no_grad()
def _generate(prompts: Sequence[Sequence[int]], model: torch.nn.Module,
              tokenizer: PreTrainedTokenizerBase, config: GenerationConfig, desc: str,
              caches: PromptCaches | None, anchored: bool = True) -> list[tuple[str, bool]]:
    """(text cut at the stop strings, whether it ran to max_new_tokens unfinished) of each
    prompt, in the input order; with `caches`, each prompt starts from its longest stored
    prefix, after the call's (or else each batch's) shared prefix and the prompts noted earlier
    that these start the same way (`PromptCaches.anchors`, unless `anchored` is False) are
    stored."""
    model.eval()
    device = next(model.parameters()).device
    seq2seq = is_encoder_decoder(model)

    def run_anchors(anchors: list[tuple[int, ...]]) -> None:
        # Prompts looked up earlier that these share more of (the clean items of a study
        # whose results were cached): their states are kept first, one token generated.
        _generate(anchors, model, tokenizer, replace(config, max_new_tokens=1, do_sample=False,
                                                     stop=[]), desc, caches, anchored=False)
    if caches is not None:  # what runs is what the store does not hold
        order = caches.plan(model, prompts, run_anchors if anchored else None)
    else:  # longest first: little padding per batch, and memory peaks early
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[tuple[str, bool]] = [("", False)] * len(prompts)
    torch.manual_seed(config.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra: dict[str, object] = {}
    if config.do_sample:
        extra.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
    else:
        extra.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if config.stop:
        extra.update(stop_strings=list(config.stop), tokenizer=tokenizer)
    settings = {"pad_token_id": pad_id, "eos_token_id": tokenizer.eos_token_id, **extra}
    argmax = _picks_argmax(model, {**settings, "max_new_tokens": config.max_new_tokens}) \
        if caches is not None else None
    # What ends a row at its first new token when that token is picked before `generate`.
    ends_first: list[StoppingCriteria] = [EosTokenCriteria(argmax.eos_token_id)] \
        if argmax is not None and argmax.eos_token_id is not None else []
    if argmax is not None and config.stop:
        ends_first.append(StopStringCriteria(tokenizer, list(config.stop)))
    with tqdm(total=len(prompts), desc=desc, unit="ex", leave=False) as bar:
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            batch = [prompts[i] for i in rows]
            laid_out = None
            if caches is not None:
                laid_out = caches.inputs(model, batch, pad_id, whole=argmax is not None)
                ids, mask, cached = laid_out.input_ids, laid_out.attention_mask, laid_out.cached
            else:
                ids, mask = (right_pad if seq2seq else left_pad)(batch, pad_id)
                ids, mask, cached = ids.to(device), mask.to(device), {}
            run: Any = model.generate  # Any: transformers' generate; nn.Module lacks it
            if argmax is not None and laid_out is not None and laid_out.next_logits is not None:
                new_tokens = _from_first_token(run, laid_out, ends_first, config, settings)
            else:
                generated = run(input_ids=ids, attention_mask=mask, **cached,
                                max_new_tokens=config.max_new_tokens, **settings)
                # A decoder's sequences start with its start token; a causal LM's with the
                # prompt.
                new_tokens = generated[:, 1:] if seq2seq else generated[:, ids.shape[1]:]
            if caches is not None and laid_out is not None:
                caches.keep(batch, laid_out)
            ends = {t for t in (tokenizer.eos_token_id, pad_id) if t is not None}
            for row, tokens in zip(rows, new_tokens, strict=True):
                decoded = decode(tokenizer, tokens, skip_special_tokens=True)
                text = cut_at_stop(decoded, config.stop)
                outputs[row] = (text, len(tokens) >= config.max_new_tokens and text == decoded
                                and int(tokens[-1]) not in ends)
            bar.update(len(rows))
    return outputs


def _picks_argmax(model: torch.nn.Module, settings: dict[str, Any]  # Any: generate's kwargs
                  ) -> HFGenerationConfig | None:
    """The generation config `model.generate(**settings)` runs under where it picks each next
    token as the argmax of the model's logits (greedy search, no logits processor: none from
    the settings, none from the model's own generation config, e.g. a repetition penalty);
    None otherwise, or where transformers cannot say (then `generate` picks every token)."""
    try:  # transformers' own merge of the settings with the model's config, and its processors
        device = next(model.parameters()).device
        prepare: Any = model._prepare_generation_config  # Any: transformers' generate mixin
        merged, _ = prepare(None, **settings)
        special: Any = model._prepare_special_tokens  # Any: the same mixin's
        special(merged, True, device=device)  # the end-token processors (min_new_tokens) need it
        processors_for: Any = model._get_logits_processor  # Any: the same mixin's
        processors = processors_for(merged, input_ids_seq_length=1, device=device)
        greedy = merged.get_generation_mode() is GenerationMode.GREEDY_SEARCH
    except (AttributeError, TypeError, ValueError):
        return None
    return merged if greedy and len(processors) == 0 else None


def _from_first_token(run: Any, laid_out: BatchInputs,  # Any: the model's generate
                      ends: Sequence[StoppingCriteria], config: GenerationConfig,
                      settings: dict[str, Any]  # Any: generate's keyword arguments
                      ) -> torch.Tensor:
    """Each row's new tokens, where every prompt ran (`laid_out.next_logits`): the first is the
    argmax after the prompt, then `generate` continues from it; a row the first token ends
    (`ends`: the end token, the stop strings, as `generate` checks them) gets pad tokens after
    it, as `generate` pads a finished row."""
    assert laid_out.next_logits is not None
    first = laid_out.next_logits.argmax(-1).to(laid_out.input_ids.device)
    ids = cast("torch.LongTensor", torch.cat([laid_out.input_ids, first[:, None]], dim=1))
    done = torch.zeros_like(first, dtype=torch.bool)
    for criterion in ends:
        done |= criterion(ids, None)
    if config.max_new_tokens == 1 or bool(done.all()):
        return first[:, None]
    mask = torch.cat([laid_out.attention_mask, torch.ones_like(first[:, None])], dim=1)
    generated = run(input_ids=ids, attention_mask=mask, **laid_out.cached,
                    max_new_tokens=config.max_new_tokens - 1,
                    stopping_criteria=StoppingCriteriaList([_Ended(done)]), **settings)
    new = generated[:, laid_out.input_ids.shape[1]:].clone()
    new[done, 1:] = settings["pad_token_id"]
    return new


class _Ended(StoppingCriteria):
    """The rows the first new token ended (picked before `generate` ran): `generate` marks
    them finished at its first step, so they do not keep the batch decoding."""

    def __init__(self, done: torch.Tensor) -> None:
        self.done = done

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                 **kwargs: object) -> torch.BoolTensor:
        return cast("torch.BoolTensor", self.done.clone())
