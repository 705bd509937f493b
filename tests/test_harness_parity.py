"""tunelab's lm-eval model (`TunelabLM`) against lm-eval's own `hf` model (`HFLM`) on the same
tiny model and tokenizer: the context window HFLM finds (one beyond 2048 tokens, one of 64),
a tokenizer that adds BOS to a text that already begins with it, chat templates, and the
numbers of all three request types, for causal and encoder-decoder (`backend="seq2seq"`)
models. Rolling sums run in float64, where 1e-4 nats over a few
thousand tokens is a real tolerance (float32 rounds such sums by more)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import yaml
from families import build
from helpers import DATA
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tokenizers import processors
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from tunelab.eval import harness
from tunelab.eval.harness import TunelabLM
from tunelab.models import LoadedModel
from tunelab.models.kinds import CAUSAL, get_kind, language_kind

LONG = "the movie was good and the plot was great , " * 30
BOS_CHAT = ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'"
            " + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
            "{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(autouse=True)
def _quiet_lm_eval():
    logging.disable(logging.WARNING)  # HFLM warns about every model passed as an object
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def plain(tiny_llama: Path):
    """The tiny BPE tokenizer (BOS <|im_start|>, never added) with a ChatML template."""
    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def bos_tok(tiny_llama: Path):
    """A Llama-3 / Gemma style tokenizer: it adds BOS "<s>" to every text, and its chat
    template writes "<s>" too."""
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_special_tokens({"bos_token": "<s>"})
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)])
    tok.chat_template = BOS_CHAT
    assert tok("the movie").input_ids[0] == tok.bos_token_id
    return tok


@pytest.fixture(scope="module")
def eos_tok(tiny_llama: Path):
    """A T5 / BART style tokenizer: it appends EOS to every text it encodes."""
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {tok.eos_token}", pair=f"$A {tok.eos_token} $B {tok.eos_token}",
        special_tokens=[(tok.eos_token, tok.eos_token_id)])
    assert tok("the movie").input_ids[-1] == tok.eos_token_id
    return tok


def llama(tokenizer, window: int, init: float = 0.02, double: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=window,
        initializer_range=init, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True))
    return model.double() if double else model


def pair(model: torch.nn.Module, tokenizer, **ours) -> tuple[TunelabLM, HFLM]:
    """TunelabLM and HFLM on the same model and tokenizer, HFLM with its defaults."""
    hf_args = {k: v for k, v in ours.items() if k == "add_bos_token"}
    return (TunelabLM(lm=LoadedModel(model, tokenizer, "tiny"), batch_size=3, **ours),
            HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, **hf_args))


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def both(ours: TunelabLM, hf: HFLM, kind: str, args: list[tuple]) -> tuple[list, list]:
    got = getattr(ours, kind)(requests(kind, args))
    return got, getattr(hf, kind)(requests(kind, args), disable_tqdm=True)


def test_context_window_is_hflms(plain) -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(plain), n_embd=16, n_layer=1, n_head=2,
                                      n_positions=96))
    for model, window in ((llama(plain, 64), 64), (llama(plain, 8192), 8192), (gpt2, 96)):
        ours, hf = pair(model, plain)
        assert ours.max_length == hf.max_length == window
    assert pair(llama(plain, 8192), plain, max_length=100)[0].max_length == 100


def test_rolling_beyond_2048_tokens_matches_hflm(plain) -> None:
    """A 2,161-token document in one 8192-token window, as HFLM scores it; capped at 2048
    (the old default) it differs by nats."""
    model = llama(plain, 8192, init=0.3, double=True)
    ours, hf = pair(model, plain)
    doc = (DATA / "reviews.jsonl").read_text()
    assert 2048 < len(plain(doc).input_ids) < 8192
    got, want = both(ours, hf, "loglikelihood_rolling", [(doc,)])
    assert got == pytest.approx(want, abs=1e-4)
    capped = TunelabLM(lm=LoadedModel(model, plain, "tiny"), max_length=2048)
    assert abs(capped.loglikelihood_rolling(requests("loglikelihood_rolling", [(doc,)]))[0]
               - want[0]) > 0.5


@pytest.mark.parametrize("tokenizer", ["plain", "bos_tok"])
def test_rolling_in_a_64_token_window_matches_hflm(tokenizer, request) -> None:
    """Several windows per text; with a BOS-adding tokenizer HFLM scores [BOS, BOS, text] (its
    tok_encode adds one, the prefix is another), and so does the bridge."""
    tok = request.getfixturevalue(tokenizer)
    ours, hf = pair(llama(tok, 64, double=True), tok)
    texts = [(LONG,), ("short text",), ("<s>the movie",), ("",)]
    got, want = both(ours, hf, "loglikelihood_rolling", texts)
    assert got == pytest.approx(want, abs=1e-4)
    assert want[0] < -100  # LONG spans several windows


@pytest.mark.parametrize("tokenizer", ["plain", "bos_tok"])
@pytest.mark.parametrize("add_bos_token", [None, False])
def test_loglikelihood_matches_hflm(tokenizer, add_bos_token, request) -> None:
    tok = request.getfixturevalue(tokenizer)
    ours, hf = pair(llama(tok, 64), tok, add_bos_token=add_bos_token)
    pairs = [("the movie was", " good"), ("the movie was", " bad"), ("a plot ", "twist here"),
             ("", "positive review"), ("<s>the movie was", " good"), ("<s>", "the plot"),
             ("<|im_start|>user\nhi", " there"), (LONG, " good")]  # LONG: cut to 64 from the left
    got, want = both(ours, hf, "loglikelihood", pairs)
    for (logprob, greedy), (want_logprob, want_greedy) in zip(got, want, strict=True):
        assert logprob == pytest.approx(want_logprob, abs=1e-5) and greedy == want_greedy
    assert len({round(lp, 3) for lp, _ in want}) > 4  # different requests, different numbers


def test_a_context_that_begins_with_bos_gets_no_second_one(bos_tok) -> None:
    ours, hf = pair(llama(bos_tok, 64), bos_tok)
    bos = bos_tok.bos_token_id
    for text in ("<s>the movie was good", "the movie was good"):
        ids = ours.tok_encode(text)
        assert ids == hf.tok_encode(text)
        assert ids[0] == bos and ids[1] != bos
    context, continuation = ours._encode_pair("<s>the movie was", " good")
    assert context[0] == bos and context[1] != bos
    assert (context, continuation) == hf._encode_pair("<s>the movie was", " good")


@pytest.mark.parametrize("tokenizer", ["plain", "bos_tok"])
def test_greedy_generation_with_stop_strings_matches_hflm(tokenizer, request) -> None:
    tok = request.getfixturevalue(tokenizer)
    ours, hf = pair(llama(tok, 64, init=0.3), tok)
    prompts = ["the movie was", "a plot twist", "dull", "the story is", LONG]  # LONG: cut to 52
    free = ours.generate_until(requests("generate_until", [
        (p, {"until": [], "max_gen_toks": 12, "do_sample": False}) for p in prompts]))
    stop = next(text[3:5] for text in free if len(text.strip()) >= 6)  # cuts that text short
    for batch in (prompts, ["<s>" + p for p in prompts[:3]]):  # HFLM decides BOS per batch
        gen = [(p, {"until": [stop, "\n"], "max_gen_toks": 12, "do_sample": False}) for p in batch]
        got, want = both(ours, hf, "generate_until", gen)
        assert got == want
    cut = ours.generate_until(requests("generate_until", [
        (p, {"until": [stop, "\n"], "max_gen_toks": 12, "do_sample": False}) for p in prompts]))
    assert any(len(c) < len(f) for c, f in zip(cut, free, strict=True)) and any(free)


@pytest.mark.parametrize("tokenizer", ["plain", "bos_tok"])
def test_chat_template_renders_as_hflm(tokenizer, request) -> None:
    tok = request.getfixturevalue(tokenizer)
    ours, hf = pair(llama(tok, 64), tok)
    chats = [[{"role": "user", "content": "Is this review positive?"}],
             [{"role": "system", "content": "Answer in one word."},
              {"role": "user", "content": "Review: dull\nSentiment:"}],
             [{"role": "user", "content": "Review: fine"}, {"role": "assistant", "content": "posi"}]]
    for chat in chats:
        for generation_prompt in (True, False):
            text = ours.apply_chat_template(chat, add_generation_prompt=generation_prompt)
            assert text == hf.apply_chat_template(chat, add_generation_prompt=generation_prompt)
            assert "<|im_start|>user\n" in text
    assert ours.chat_template(True) == hf.chat_template(True) == tok.chat_template
    assert ours.tokenizer_name == hf.tokenizer_name


def write_tasks(folder: Path, until: tuple[str, ...] = ("\n", ".")) -> Path:
    """A multiple-choice and a generation lm-eval task (stopping at `until`) over the test
    reviews; the folder of their YAML files."""
    data = folder / "reviews.jsonl"
    data.write_text((DATA / "reviews.jsonl").read_text())
    tasks = folder / "tasks"
    tasks.mkdir()
    common = {"dataset_path": "json", "test_split": "test",
              "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "hf")},
              "doc_to_text": "Review: {{text}}\nSentiment:"}
    (tasks / "tiny_mc.yaml").write_text(yaml.safe_dump(common | {
        "task": "tiny_mc", "output_type": "multiple_choice",
        "doc_to_choice": ["positive", "negative"],
        "doc_to_target": "{{['positive', 'negative'].index(label)}}",
        "metric_list": [{"metric": "acc"}]}))
    (tasks / "tiny_gen.yaml").write_text(yaml.safe_dump(common | {
        "task": "tiny_gen", "output_type": "generate_until", "doc_to_target": "{{label}}",
        "generation_kwargs": {"until": list(until), "max_gen_toks": 6, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}]}))
    return tasks


@pytest.mark.parametrize("tokenizer", ["plain", "bos_tok"])
def test_apply_chat_template_evaluates_as_hflm(tokenizer, request, tmp_path: Path) -> None:
    """lm-eval's apply_chat_template=True: the same rendered prompts, responses and scores."""
    tok = request.getfixturevalue(tokenizer)
    manager = TaskManager(include_path=str(write_tasks(tmp_path)), include_defaults=False)
    runs = {name: simple_evaluate(model=model, tasks=["tiny_mc", "tiny_gen"], task_manager=manager,
                                  limit=3, bootstrap_iters=0, apply_chat_template=True)
            for name, model in zip(("tunelab", "hf"), pair(llama(tok, 64), tok), strict=True)}
    opening = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)[:17]
    for task in ("tiny_mc", "tiny_gen"):
        ours, theirs = runs["tunelab"]["samples"][task], runs["hf"]["samples"][task]
        assert len(ours) == len(theirs) == 3
        for mine, want in zip(ours, theirs, strict=True):
            assert mine["arguments"] == want["arguments"]
            assert all(args[0].startswith(opening) for args in mine["arguments"])
            if task == "tiny_mc":
                assert [r[0][0] for r in mine["resps"]] == pytest.approx(
                    [r[0][0] for r in want["resps"]], abs=1e-5)
            else:
                assert mine["resps"] == want["resps"]
        assert runs["tunelab"]["results"][task] == runs["hf"]["results"][task]


def encoder_decoder(name: str, tokenizer) -> torch.nn.Module:
    """The tiny T5 or BART (tests/families.py) on the tiny tokenizer, in float64 (HFLM's sums
    over many windows; tunelab takes log-probabilities in float32), with weights large enough
    that its choices differ."""
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    if name == "t5":
        ids.update(decoder_start_token_id=tokenizer.pad_token_id, initializer_factor=5.0)
    else:
        ids.update(bos_token_id=tokenizer.bos_token_id,
                   decoder_start_token_id=tokenizer.eos_token_id, init_std=0.5)
    return build(name, **ids).double()


def seq2seq_pair(model: torch.nn.Module, tokenizer, window: int, hf_batch: int = 3
                 ) -> tuple[TunelabLM, HFLM]:
    return (TunelabLM(lm=LoadedModel(model, tokenizer, "tiny", kind=get_kind("seq2seq")),
                      batch_size=3, max_length=window),
            HFLM(pretrained=model, tokenizer=tokenizer, batch_size=hf_batch, backend="seq2seq",
                 max_length=window))


@pytest.mark.parametrize("tokenizer", ["plain", "eos_tok"])
@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder_scores_match_hflm_seq2seq(name, tokenizer, request) -> None:
    """The encoder reads the context (its last 16 tokens, the window), the decoder is scored
    on the continuation, each encoded apart (a tokenizer that appends EOS ends the context
    with it, not the continuation); a rolling text spans several windows, each window's
    encoder reading only the tokens before the ones it scores, as HFLM's seq2seq backend
    reads them."""
    plain = request.getfixturevalue(tokenizer)
    ours, hf = seq2seq_pair(encoder_decoder(name, plain), plain, 16)
    assert ours._encode_pair("the movie was", " good") == hf._encode_pair("the movie was", " good")
    pairs = [("the movie was", " good"), ("the movie was", " bad"), ("a plot ", "twist here"),
             ("", "positive review"), (LONG, " good")]  # LONG: the encoder reads its last 16
    got, want = both(ours, hf, "loglikelihood", pairs)
    for (logprob, greedy), (want_logprob, want_greedy) in zip(got, want, strict=True):
        assert logprob == pytest.approx(want_logprob, rel=1e-6) and greedy == want_greedy
    assert len({round(lp, 3) for lp, _ in want}) == len(pairs)
    texts = [(LONG,), ("short text",), ("the movie was good",)]
    assert len(plain(LONG).input_ids) > 4 * 16  # several windows
    got_rolling, want_rolling = both(ours, hf, "loglikelihood_rolling", texts)
    assert got_rolling == pytest.approx(want_rolling, rel=1e-6)  # logits in float32
    assert len({round(x, 3) for x in want_rolling}) == len(texts) and max(want_rolling) < -1


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_encoder_decoder_generation_matches_hflm_seq2seq(name, plain) -> None:
    """The same greedy tokens, cut at the same stop strings. HFLM's seq2seq backend gives the
    decoder max_length = the batch's padded context width + max_gen_toks (lm-eval 0.4.13),
    so it writes more than max_gen_toks tokens unless a request sets max_length; with
    max_length = max_gen_toks + 1 (the start token counts) both write max_gen_toks tokens,
    and without it the bridge's text begins HFLM's. HFLM runs one prompt a batch here: it
    pads a batch's encoder inputs on the left, which moves BART's learned positions (the
    bridge pads on the right, as training does, and batches three)."""
    ours, hf = seq2seq_pair(encoder_decoder(name, plain), plain, 64, hf_batch=1)
    prompts = ["the movie was", "a plot twist in " + LONG, "x"]  # the second cut to 64 tokens
    for until in ([], ["the"], ["ex"]):
        for tokens in (3, 6):
            exact = {"until": until, "max_gen_toks": tokens, "max_length": tokens + 1}
            got, want = both(ours, hf, "generate_until", [(p, exact) for p in prompts])
            assert got == want
            loose = {"until": until, "max_gen_toks": tokens}
            got, want = both(ours, hf, "generate_until", [(p, loose) for p in prompts])
            assert all(theirs.startswith(mine) for mine, theirs in zip(got, want, strict=True))
    assert len(set(both(ours, hf, "generate_until", [(p, {"until": [], "max_gen_toks": 6})
                                                      for p in prompts])[0])) == len(prompts)


def test_a_model_named_by_its_directory_loads_as_its_kind(plain, tmp_path: Path) -> None:
    """`tunelab harness --model DIR` (TunelabLM(model=DIR)): an encoder-decoder checkpoint loads
    as seq2seq and answers as HFLM's seq2seq backend; a decoder as causal."""
    for name, model in (("t5", encoder_decoder("t5", plain).float()), ("llama", llama(plain, 64))):
        model.save_pretrained(tmp_path / name)
        plain.save_pretrained(tmp_path / name)
    t5 = TunelabLM(model=str(tmp_path / "t5"))
    assert t5.lm.kind.encoder_decoder and t5.backend == "seq2seq"
    causal = TunelabLM(model=str(tmp_path / "llama"))
    assert not causal.lm.kind.encoder_decoder and causal.backend == "causal"
    hf = HFLM(pretrained=t5.lm.model, tokenizer=plain, batch_size=3, backend="seq2seq")
    got, want = both(t5, hf, "loglikelihood", [("the movie was", " good"), ("a plot", " twist")])
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], rel=1e-6)


def test_a_checkpoint_whose_config_the_first_load_fetched_loads_again_as_its_kind(
        plain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id whose config is not on this machine reads as causal (nothing is fetched to
    decide); the load fetches it, fails as causal for an encoder-decoder, and the bridge
    loads it again as its kind. Simulated with a directory whose config is "missing" once."""
    encoder_decoder("t5", plain).float().save_pretrained(tmp_path / "t5")
    plain.save_pretrained(tmp_path / "t5")
    asked: list[str] = []

    def first_without_config(name: str):
        asked.append(name)
        return CAUSAL if len(asked) == 1 else language_kind(name)
    monkeypatch.setattr(harness, "language_kind", first_without_config)
    ours = TunelabLM(model=str(tmp_path / "t5"))
    assert ours.lm.kind.encoder_decoder and ours.backend == "seq2seq" and len(asked) == 2
