"""Multiple-choice scoring: the shared-context pass equals naive per-choice scoring, and the
tokenisation follows lm-evaluation-harness's convention."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import tunelab.eval.choice as choice_module
from tunelab.config import ModelConfig
from tunelab.eval.choice import ChoiceRequest, encode_pair, prefix_token_id, score_choices
from tunelab.eval.metrics import get_metric
from tunelab.eval.metrics_lm import choice_predictions
from tunelab.methods import get_method
from tunelab.methods.base import parse_options
from tunelab.models import load_model
from tunelab.models.cache import MIN_SHARED_PREFIX, shared_prefix, shares_cache

WORDS = "the movie was good bad great awful positive negative story plot actor .".split()


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))


def naive_logprob(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """One full forward pass over context + continuation, nothing shared or batched."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    lp = F.log_softmax(logits.float(), dim=-1)
    positions = range(len(context) - 1, len(context) + len(continuation) - 1)
    total = sum(float(lp[p, t]) for p, t in zip(positions, continuation, strict=True))
    greedy = all(int(lp[p].argmax()) == t for p, t in zip(positions, continuation, strict=True))
    return total, greedy


def assert_equals_naive(model, requests: list[ChoiceRequest], results: list) -> None:
    """Every choice's log-probability and greedy flag equal one naive forward pass's."""
    for request, result in zip(requests, results, strict=True):
        for cont, logprob, greedy in zip(request.continuations, result.logprobs, result.greedy,
                                         strict=True):
            expected, expected_greedy = naive_logprob(model, request.context, cont)
            assert logprob == pytest.approx(expected, abs=1e-4)
            assert greedy == expected_greedy


def random_requests(tokenizer, n: int, seed: int = 0) -> list[ChoiceRequest]:
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14)))
        choices = [" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
                   for _ in range(rng.randint(2, 5))]
        pairs = [encode_pair(tokenizer, context, c) for c in choices]
        requests.append(ChoiceRequest(pairs[0][0], [cont for _, cont in pairs]))
    return requests


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_shared_context_equals_naive_per_choice(lm, batch_size: int) -> None:
    requests = random_requests(lm.tokenizer, 9)
    results = score_choices(lm.model, requests, batch_size=batch_size)
    assert_equals_naive(lm.model, requests, results)


def test_whole_sequence_path_and_no_logits_to_keep_agree(lm, monkeypatch) -> None:
    requests = random_requests(lm.tokenizer, 6, seed=1)
    shared = score_choices(lm.model, requests, batch_size=4)
    whole = score_choices(lm.model, requests, batch_size=4, shared_context=False)
    monkeypatch.setattr(choice_module, "accepts_logits_to_keep", lambda model: False)
    full_logits = score_choices(lm.model, requests, batch_size=4)
    for a, b, c in zip(shared, whole, full_logits, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-4)
    # ...and each path is right, not merely the same: naive per-choice scoring agrees.
    for results in (shared, whole, full_logits):
        assert_equals_naive(lm.model, requests, results)


def test_long_choices_are_chunked(lm, monkeypatch) -> None:
    monkeypatch.setattr(choice_module, "MAX_LOGIT_ROWS", 3)  # force several continuation passes
    requests = random_requests(lm.tokenizer, 5, seed=2)
    chunked = score_choices(lm.model, requests, batch_size=5)
    for request, result in zip(requests, chunked, strict=True):
        expected = [naive_logprob(lm.model, request.context, c)[0] for c in request.continuations]
        assert result.logprobs == pytest.approx(expected, abs=1e-4)


def test_one_token_choices_need_only_the_context_pass(lm, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(choice_module, "_score_rest", lambda *a: calls.append(a))
    context = lm.tokenizer("the movie was").input_ids
    options = [lm.tokenizer(" good", add_special_tokens=False).input_ids[:1],
               lm.tokenizer(" bad", add_special_tokens=False).input_ids[:1]]
    result = score_choices(lm.model, [ChoiceRequest(context, options)])[0]
    assert not calls
    assert result.logprobs[0] == pytest.approx(naive_logprob(lm.model, context, options[0])[0], abs=1e-5)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_a_shared_prefix_runs_once_and_scores_equal_naive(lm, batch_size: int) -> None:
    """Fixed few-shot examples: every context starts with the same tokens (>= 16), which run
    once for the call; the scores equal naive per-choice scoring."""
    shots = lm.tokenizer(" ".join(WORDS * 3)).input_ids
    assert len(shots) >= MIN_SHARED_PREFIX
    requests = [ChoiceRequest(shots + r.context, r.continuations)
                for r in random_requests(lm.tokenizer, 6, seed=3)]
    shapes = []
    hook = lm.model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True)
    try:
        results = score_choices(lm.model, requests, batch_size=batch_size)
    finally:
        hook.remove()
    shared = shared_prefix([r.context for r in requests])
    assert shared >= len(shots) - 1
    assert shapes.count((1, shared)) == 1  # the prefix: one pass for every batch
    shapes.remove((1, shared))
    # After it only the contexts' own tokens (padded at most) and the choices' tokens after
    # their first run: the shots never again.
    own = max(len(r.context) - shared for r in requests)
    pairs = [c for r in requests for c in r.continuations]
    assert sum(rows * width for rows, width in shapes) <= \
        len(requests) * own + len(pairs) * max(len(c) for c in pairs)
    assert_equals_naive(lm.model, requests, results)


def test_encode_pair_moves_trailing_space_to_the_continuation(tiny_tokenizer) -> None:
    context_ids, cont_ids = encode_pair(tiny_tokenizer, "Answer: ", "positive")
    whole = tiny_tokenizer("Answer: positive").input_ids
    assert context_ids == tiny_tokenizer("Answer:").input_ids
    assert context_ids + cont_ids == whole
    assert tiny_tokenizer.decode(cont_ids) == " positive"


def test_empty_context_is_the_prefix_token(tiny_tokenizer) -> None:
    context_ids, cont_ids = encode_pair(tiny_tokenizer, "", "the movie")
    assert context_ids == [prefix_token_id(tiny_tokenizer)]
    assert cont_ids == tiny_tokenizer("the movie", add_special_tokens=False).input_ids


def test_multiple_choice_metric_acc_and_acc_norm() -> None:
    metric = get_metric("multiple_choice")
    # Choice 0 is likelier overall; per character choice 1 wins (lm-eval's acc_norm).
    item = metric.item(([-4.0, -6.0], [2, 10]), 1)
    assert item == (0.0, 1.0)
    assert choice_predictions([-1.0, -1.0], [3, 3]) == (0, 0)  # ties: first choice, as numpy
    assert metric.item(([-1.0, -2.0, -0.5], [1, 1, 1]), [0, 2]) == (1.0, 1.0)  # several golds
    scores = metric.aggregate([(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 1.0)])
    assert scores == {"acc": 75.0, "acc_norm": 75.0}


def test_prompt_tuning_scores_whole_sequences(tiny_llama: Path) -> None:
    base = load_model(ModelConfig(name=str(tiny_llama)))
    method = get_method("prompt")
    model = method.apply(base.model, parse_options(method, {"name": "prompt", "num_virtual_tokens": 4}),
                         base.kind)
    assert not shares_cache(model)  # peft's virtual tokens own the cache
    request = random_requests(base.tokenizer, 1, seed=3)[0]
    result = score_choices(model, [request])[0]
    for cont, logprob in zip(request.continuations, result.logprobs, strict=True):
        ids = torch.tensor([request.context + cont])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -ids.shape[1]:]  # drop the virtual positions
        lp = F.log_softmax(logits.float(), dim=-1)
        n = len(request.context)
        assert logprob == pytest.approx(sum(float(lp[n - 1 + i, t]) for i, t in enumerate(cont)), abs=1e-4)


@pytest.mark.parametrize("method", [None, "prompt"])
def test_an_encoder_decoder_model_scores_each_choice_as_the_decoders_labels(
        tiny_tokenizer, method: str | None) -> None:
    """The context is the encoder's input and each choice the decoder's labels, as
    lm-evaluation-harness scores such models; each choice encoded on its own. Under prompt
    tuning the virtual tokens are read too (the model's own forward)."""
    from tests.families import build
    from tunelab.models.kinds import get_kind

    model = build("t5")
    if method:
        chosen = get_method(method)
        model = chosen.apply(model, parse_options(chosen, {"num_virtual_tokens": 3}),
                             get_kind("seq2seq")).eval()
        torch.manual_seed(2)
        with torch.no_grad():  # virtual tokens that change the scores
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.normal_(0, 2.0)
    context, first = encode_pair(tiny_tokenizer, "the movie was ", "good", separately=True)
    assert context == tiny_tokenizer("the movie was").input_ids  # the space moved on
    assert first == tiny_tokenizer(" good").input_ids
    vocab = model.config.vocab_size
    requests = [ChoiceRequest([t % vocab for t in context], [[t % vocab for t in first], [5],
                                                              [9, 17, 33]]),
                ChoiceRequest([4, 8, 15, 16, 23], [[42, 7], [3]])]
    results = score_choices(model, requests, batch_size=2)
    for request, result in zip(requests, results, strict=True):
        for cont, logprob, greedy in zip(request.continuations, result.logprobs, result.greedy,
                                         strict=True):
            with torch.no_grad():  # one pair alone: encoder input, decoder labels
                logits = model(input_ids=torch.tensor([request.context]),
                               labels=torch.tensor([cont])).logits[0].float()
            lp = F.log_softmax(logits, dim=-1)
            assert logprob == pytest.approx(sum(float(lp[k, t]) for k, t in enumerate(cont)),
                                            abs=1e-5)
            assert greedy == all(int(lp[k].argmax()) == t for k, t in enumerate(cont))
    assert len({round(lp, 4) for r in results for lp in r.logprobs}) == 5  # not one value
