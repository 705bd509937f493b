"""Rolling log-likelihood: windows with a stride score every token once; the sums equal a
single-window computation on short text and a naive token-by-token sliding computation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_llama
from families import build
from transformers import AutoTokenizer

from tunelab.config import ModelConfig
from tunelab.eval.choice import prefix_token_id
from tunelab.eval.metrics import get_metric
from tunelab.eval.result_cache import ResultCache, token_bytes
from tunelab.eval.rolling_nll import rolling_loglikelihood, rolling_nll_of_ids, windows_for
from tunelab.models import load_model

TEXT = ("a gorgeous , witty , seductive movie . the story is also as unoriginal as they come , "
        "already having been recycled more times than i 'd care to count .")


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))


def full_nll(model, ids: list[int]) -> float:
    """NLL of ids[1:] given everything before, in one pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return float(F.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="sum"))


def naive_sliding_nll(model, seq: list[int], max_length: int, stride: int) -> float:
    """Each token j scored by its own forward pass over exactly the context its window gives."""
    total, scored, end = 0.0, 0, min(max_length, len(seq) - 1)
    while scored < len(seq) - 1:
        begin = max(0, end - max_length)
        for j in range(scored, end):  # input position j predicts seq[j + 1]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq[begin:j + 1]])).logits[0, -1]
            total -= float(F.log_softmax(logits.float(), dim=-1)[seq[j + 1]])
        scored, end = end, min(end + stride, len(seq) - 1)
    return total


def test_windows_cover_every_token_once() -> None:
    windows = windows_for(0, 10, max_length=4, stride=4)
    assert [(w.begin, w.end, w.first_scored) for w in windows] == [(0, 4, 0), (4, 8, 4), (6, 10, 8)]
    windows = windows_for(0, 7, max_length=4, stride=2)
    assert [(w.begin, w.end, w.first_scored) for w in windows] == [(0, 4, 0), (2, 6, 4), (3, 7, 6)]
    for n, length, stride in [(1, 4, 4), (13, 5, 2), (20, 6, 1), (9, 9, 3)]:
        scored = [j for w in windows_for(0, n, length, stride) for j in range(w.first_scored, w.end)]
        assert scored == list(range(n))
        assert all(w.end - w.begin <= length for w in windows_for(0, n, length, stride))
    with pytest.raises(ValueError):
        windows_for(0, 5, max_length=4, stride=5)


def test_short_text_equals_one_window(lm) -> None:
    seq = [prefix_token_id(lm.tokenizer)] + lm.tokenizer(TEXT, add_special_tokens=False).input_ids
    score = rolling_loglikelihood(lm.model, lm.tokenizer, [TEXT], max_length=512)[0]
    assert score.tokens == len(seq) - 1
    assert score.nll == pytest.approx(full_nll(lm.model, seq), rel=1e-5)
    assert score.bytes == len(TEXT.encode("utf-8")) and score.words == len(TEXT.split())


@pytest.mark.parametrize("max_length,stride", [(8, 8), (8, 3), (5, 1)])
def test_windows_equal_naive_sliding(lm, max_length: int, stride: int) -> None:
    texts = [TEXT, "dull", TEXT[:60]]
    scores = rolling_loglikelihood(lm.model, lm.tokenizer, texts, max_length, stride, batch_size=3)
    for text, score in zip(texts, scores, strict=True):
        seq = [prefix_token_id(lm.tokenizer)] + lm.tokenizer(text, add_special_tokens=False).input_ids
        assert score.nll == pytest.approx(naive_sliding_nll(lm.model, seq, max_length, stride), rel=1e-5)


def test_more_context_never_needs_more_tokens(lm) -> None:
    disjoint = rolling_loglikelihood(lm.model, lm.tokenizer, [TEXT], 8, 8)[0]
    overlapping = rolling_loglikelihood(lm.model, lm.tokenizer, [TEXT], 8, 2)[0]
    assert disjoint.tokens == overlapping.tokens
    assert disjoint.nll != pytest.approx(overlapping.nll)


def test_bits_per_byte_and_word_perplexity_sum_before_dividing() -> None:
    bpb = get_metric("bits_per_byte")
    items = [bpb.item(10.0, 20), bpb.item(2.0, 4)]
    scores = bpb.aggregate(items)
    assert scores["bits_per_byte"] == pytest.approx(12.0 / (24 * math.log(2)))
    assert scores["byte_perplexity"] == pytest.approx(math.exp(12.0 / 24))
    words = get_metric("word_perplexity")
    assert words.aggregate([words.item(6.0, 3), words.item(0.0, 1)])["word_perplexity"] == \
        pytest.approx(math.exp(6.0 / 4))
    assert "bits_per_byte" in bpb.lower_is_better


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_encoder_reads_only_the_context(family: str) -> None:
    """Each window: the encoder reads the tokens before the ones it scores ([prefix] in the
    first), the decoder is scored on the window's tokens from its start token; computed here
    one window at a time with the model's own loss. Run whole, the encoder would read the
    tokens it is scored on."""
    model = build(family)
    torch.manual_seed(3)
    seq = [1, *torch.randint(3, 128, (21,)).tolist()]  # [prefix] + 21 tokens
    got = rolling_nll_of_ids(model, [seq, seq[:6]], max_length=8, stride=8, batch_size=2)
    want = [0.0, 0.0]
    with torch.no_grad():
        for doc, tokens in enumerate((seq, seq[:6])):
            for w in windows_for(0, len(tokens) - 1, 8, 8):
                labels = torch.tensor([tokens[w.first_scored + 1:w.end + 1]])
                loss = model(input_ids=torch.tensor([tokens[w.begin:w.first_scored + 1]]),
                             labels=labels).loss
                want[doc] += float(loss) * labels.shape[1]
            whole = model(input_ids=torch.tensor([tokens]), labels=torch.tensor([tokens[1:]]))
            assert abs(float(whole.loss) * (len(tokens) - 1) - want[doc]) > 1e-3
    assert got == pytest.approx(want, rel=1e-5)
    assert len(windows_for(0, len(seq) - 1, 8, 8)) == 3


def test_encoder_decoder_results_cached_before_are_not_served(tmp_path: Path) -> None:
    """An encoder-decoder's rolling results are kept under their own settings: what BART
    scored when its encoder read the whole window (the same request and settings before)
    is never looked up."""
    tokenizer = AutoTokenizer.from_pretrained(build_tiny_llama(tmp_path / "tok"))
    model = build("bart", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id,
                  decoder_start_token_id=tokenizer.eos_token_id)
    results = ResultCache(tmp_path / "results.sqlite")
    old = {"max_length": 8, "stride": 8}
    sequence = [prefix_token_id(tokenizer)] + list(tokenizer(TEXT, add_special_tokens=False).input_ids)
    stale = results.through(model, "rolling_nll", old, [token_bytes(sequence)], lambda i: [123.0])
    assert stale == [123.0]
    got = rolling_loglikelihood(model, tokenizer, [TEXT], max_length=8, results=results)
    want = rolling_nll_of_ids(model, [sequence], max_length=8)
    assert got[0].nll == pytest.approx(want[0]) and got[0].nll != 123.0
