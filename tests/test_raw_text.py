"""Raw text (data.template text, domain adaptation): .txt files and folders as sources, the loss
on every token (labels equal the inputs wherever the sequence is real, long documents cut into
windows that predict every token once), packing on by default, the held-out documents scored
by perplexity equal to a hand computation, before -> after in the run's report, and bad input
(an empty text file) refused in one line with exit code 2."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import DATA, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    MixtureConfig,
    ModelConfig,
    RetentionConfig,
    TrainTaskConfig,
)
from tunelab.core.errors import TunelabError
from tunelab.data import get_template, load_splits
from tunelab.data.sources import read_records
from tunelab.data.tokenize import Packed, Padded, tokenize_records
from tunelab.data.training_tasks import run_task, training_tasks, with_packing
from tunelab.eval.runner import evaluate_loaded, read_result
from tunelab.models import load_model
from tunelab.models.kinds import CAUSAL
from tunelab.models.tokens import IGNORE_INDEX, prefix_token_id
from tunelab.runs import EvalDir, RunDir, System
from tunelab.workflows.train import plan_run

REVIEWS = DATA / "reviews.jsonl"
TEXTS = [json.loads(line)["text"] for line in REVIEWS.read_text().splitlines()]


def text_config(model: Path, out: Path, **data: object):
    """The tiny run on the review sentences as raw documents (template text)."""
    config = tiny_run_config(model, out, max_steps=4, lr=5e-2)
    fields = dict(source=str(REVIEWS), template="text", test_size=8, validation_size=4,
                  max_length=128)
    fields.update(data)
    return replace(config, data=DataConfig(**fields), eval=EvalConfig())


@pytest.fixture(scope="module")
def lm(tiny_llama: Path):
    return load_model(ModelConfig(name=str(tiny_llama)))


# ---- sources -------------------------------------------------------------------------------

def test_a_text_file_is_one_document_per_block_between_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nof the first\n\n\n  second one  \n \nthird\n", encoding="utf-8")
    records = read_records(str(path), fields={"text": "text"})
    assert [r.output for r in records] == ["first line\nof the first", "second one", "third"]
    assert [r.origin for r in records] == [f"{path}:1", f"{path}:5", f"{path}:7"]


def test_a_folder_is_one_document_per_text_file(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("one\n\nparagraph two\n", encoding="utf-8")
    (tmp_path / "b" / "c.txt").write_text("three", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not read", encoding="utf-8")
    splits = load_splits(DataConfig(source=str(tmp_path), template="text", test_size=0,
                                    validation_size=0))
    assert sorted(r.output for r in splits.train) == ["one\n\nparagraph two", "three"]


def test_a_text_column_and_a_mapped_column(tmp_path: Path) -> None:
    records = load_splits(DataConfig(source=str(REVIEWS), template="text", test_size=0,
                                     validation_size=0)).train
    assert sorted(r.output for r in records) == sorted(TEXTS)
    body = tmp_path / "body.jsonl"
    body.write_text("".join(json.dumps({"body": t}) + "\n" for t in TEXTS[:3]))
    mapped = load_splits(DataConfig(source=str(body), template="text", fields={"text": "body"},
                                    test_size=0, validation_size=0)).train
    assert sorted(r.output for r in mapped) == sorted(TEXTS[:3])
    with pytest.raises(TunelabError, match=r"data.fields.text: column 'text' is in no row"):
        load_splits(DataConfig(source=str(body), template="text"))
    with pytest.raises(TunelabError, match=r"data.fields.text: only data.template text"):
        load_splits(DataConfig(source=str(body), fields={"text": "body"}))


def test_the_built_in_sci_space_posts_are_raw_domain_text() -> None:
    """gensim's 20 Newsgroups sample, read from the pickle's strings without unpickling."""
    splits = load_splits(DataConfig(source="builtin:sci_space", template="text", test_size=30,
                                     validation_size=10))
    records = [*splits.train, *splits.validation, *splits.test]
    assert len(records) == 100
    assert all(r.output.startswith("Subject: ") and "\n\n" in r.output for r in records)
    assert not any("Path: " in r.output.split("\n\n")[0] for r in records)  # headers dropped
    assert sum("orbit" in r.output.lower() for r in records) > 10


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_an_empty_text_file_is_one_line_and_exit_2(tmp_path: Path, tiny_llama: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   layout: str) -> None:
    if layout == "file":
        empty = source = tmp_path / "empty.txt"
    else:
        source = tmp_path / "corpus"
        source.mkdir()
        (source / "a.txt").write_text("a document", encoding="utf-8")
        empty = source / "b.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    config = {"name": "empty", "output_dir": str(tmp_path / "runs"),
              "model": {"name": str(tiny_llama)},
              "data": {"source": str(source), "template": "text"}, "train": {"max_steps": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "run.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{empty}: an empty text file" in err[0], err
    assert not (tmp_path / "runs" / "empty").exists()


def test_raw_text_needs_a_causal_model(tmp_path: Path, tiny_llama: Path) -> None:
    config = text_config(tiny_llama, tmp_path)
    config = replace(config, model=replace(config.model, kind="seq2seq"))
    with pytest.raises(TunelabError, match=r"data.template text: model.kind seq2seq does not "
                                           r"train on raw documents"):
        training_tasks(config)


# ---- the loss covers every token -----------------------------------------------------------

def test_labels_equal_the_inputs_wherever_the_sequence_is_real(lm) -> None:
    template = get_template(DataConfig(template="text"), lm.tokenizer)
    records = read_records(str(REVIEWS), fields={"text": "text"})[:6]
    examples = tokenize_records(records, template, lm.tokenizer, CAUSAL, max_length=512)
    assert len(examples) == len(records)
    for example, record in zip(examples, records, strict=True):
        ids = lm.tokenizer(record.output, add_special_tokens=False).input_ids
        assert example.input_ids == [prefix_token_id(lm.tokenizer), *ids,
                                     lm.tokenizer.eos_token_id]
        assert example.labels == example.input_ids and example.prompt_length == 0
    pad = lm.tokenizer.pad_token_id
    padded = Padded()(examples, pad)
    real = padded["attention_mask"].bool()
    assert torch.equal(padded["labels"][real], padded["input_ids"][real])
    assert (padded["labels"][~real] == IGNORE_INDEX).all() and (~real).any()
    packed = Packed(512)(examples, pad)
    starts = packed["position_ids"] == 0  # each example's first id: context only (the shift)
    used = packed["labels"] != IGNORE_INDEX
    assert torch.equal(packed["labels"][used], packed["input_ids"][used])
    assert int(used.sum()) == sum(len(e.input_ids) - 1 for e in examples)
    assert not (used & starts).any()


def test_the_loss_is_the_mean_nll_of_every_token(lm) -> None:
    """The kind's loss on a text batch is the hand-computed mean NLL of every next token."""
    template = get_template(DataConfig(template="text"), lm.tokenizer)
    records = read_records(str(REVIEWS), fields={"text": "text"})[:3]
    examples = tokenize_records(records, template, lm.tokenizer, CAUSAL, max_length=512)
    batch = Padded()(examples, lm.tokenizer.pad_token_id)
    count = torch.tensor(float(CAUSAL.loss_targets(batch)))
    with torch.no_grad():
        loss = float(CAUSAL.loss(lm.model, batch, count))
        total, tokens = 0.0, 0
        for example in examples:
            ids = torch.tensor([example.input_ids])
            logits = lm.model(input_ids=ids).logits[0]
            total += float(F.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="sum"))
            tokens += len(example.input_ids) - 1
    assert count.item() == tokens
    assert loss == pytest.approx(total / tokens, rel=1e-5)


def test_a_long_document_is_cut_into_windows_none_lost(lm) -> None:
    text = " ".join(TEXTS[:4])
    template = get_template(DataConfig(template="text"), lm.tokenizer)
    record = read_records(str(REVIEWS), fields={"text": "text"})[0]
    record = replace(record, output=text)
    whole = [prefix_token_id(lm.tokenizer), *lm.tokenizer(text, add_special_tokens=False).input_ids,
             lm.tokenizer.eos_token_id]
    windows = tokenize_records([record], template, lm.tokenizer, CAUSAL, max_length=16)
    assert len(windows) > 3 and all(len(w.input_ids) <= 16 for w in windows)
    predicted = [t for w in windows for t in w.input_ids[1:]]  # what each window trains
    assert predicted == whole[1:]
    assert all(w.labels == w.input_ids and not w.lost_completion for w in windows)
    for before, after in zip(windows, windows[1:], strict=False):
        assert after.input_ids[0] == before.input_ids[-1]  # the context carried over


def test_packing_is_on_by_default_for_text_only(tmp_path: Path, tiny_llama: Path) -> None:
    text = TrainTaskConfig(name="t", data=DataConfig(template="text"))
    chat = TrainTaskConfig(name="c", data=DataConfig(template="chat"))
    assert with_packing(text, can_pack=True).data.packing is True
    assert with_packing(text, can_pack=False).data.packing is False
    assert with_packing(chat, can_pack=True).data.packing is False
    off = TrainTaskConfig(name="t", data=DataConfig(template="text", packing=False))
    assert with_packing(off, can_pack=True).data.packing is False
    # prompt tuning cannot pack: the default turns packing off rather than refusing the run
    config = text_config(tiny_llama, tmp_path, packing=None)
    prompt = plan_run(replace(config, method={"name": "prompt", "num_virtual_tokens": 2}))
    assert prompt.tasks[0].data.packing is False
    assert plan_run(config).tasks[0].data.packing is True


# ---- perplexity of the held-out documents --------------------------------------------------

def test_the_run_task_is_perplexity_equal_to_a_hand_computation(lm, tmp_path: Path,
                                                                tiny_llama: Path) -> None:
    config = text_config(tiny_llama, tmp_path)
    task = run_task(config)
    assert task.eval.metrics == ["perplexity", "bits_per_byte", "word_perplexity"]
    assert task.rolling.max_length == config.data.max_length
    result = evaluate_loaded(lm, task, System.base())
    documents = [r.output for r in load_splits(config.data).test]
    nll = tokens = 0.0
    with torch.no_grad():
        for text in documents:  # each review fits one window of 128 tokens
            ids = [prefix_token_id(lm.tokenizer), *lm.tokenizer(text, add_special_tokens=False).input_ids]
            assert len(ids) <= config.data.max_length
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0]
            nll += float(F.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]),
                                         reduction="sum"))
            tokens += len(ids) - 1
    assert result.n == len(documents) == 8
    assert result.scores["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    bytes_ = sum(len(t.encode("utf-8")) for t in documents)
    assert result.scores["bits_per_byte"] == pytest.approx(nll / (math.log(2) * bytes_),
                                                           rel=1e-5)


def test_named_metrics_are_kept_and_checked(tmp_path: Path, tiny_llama: Path) -> None:
    config = text_config(tiny_llama, tmp_path)
    named = replace(config, eval=EvalConfig(metrics=["bits_per_byte"]))
    assert run_task(named).eval.metrics == ["bits_per_byte"]
    wrong = replace(config, eval=EvalConfig(metrics=["rouge"]))
    with pytest.raises(TunelabError, match="rouge"):
        plan_run(wrong)


# ---- a run: domain perplexity before -> after, retention still measured --------------------

@pytest.fixture(scope="module")
def text_run(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("text-run")
    config = text_config(tiny_llama, out)
    config = replace(config, retention=RetentionConfig(tasks=["movie_reviews_lm"], limit=6))
    return config, tunelab.train(config)


def test_a_text_run_reports_domain_perplexity_before_and_after(text_run, lm) -> None:
    config, result = text_run
    run = RunDir(result.run_dir)
    rows = result.summary["domain"]["rows"]
    assert [r["key"] for r in rows] == ["perplexity", "bits_per_byte", "word_perplexity"]
    assert result.summary["domain"]["before"] == "the base model"  # no model.init_from
    assert "scored by the base model before training" in (result.run_dir / "report.md").read_text()
    before = read_result(run.eval_dir(System.base()))
    after = read_result(run.eval_dir(System.tuned()))
    assert before.n == after.n == rows[0]["n"] == 8
    assert rows[0]["before"] == pytest.approx(before.scores["perplexity"])
    assert rows[0]["after"] == pytest.approx(after.scores["perplexity"])
    assert rows[0]["before"] != pytest.approx(rows[0]["after"], rel=1e-4)  # training moved it
    # the base model alone scores what the run called "before"
    alone = evaluate_loaded(lm, run_task(config), System.base())
    assert alone.scores["perplexity"] == pytest.approx(rows[0]["before"], rel=1e-5)
    ci = rows[0]["ci"]
    assert ci[0] <= rows[0]["delta"] <= ci[1]
    # trained on every token, packed by default
    assert result.summary["train_examples"] == 28
    assert result.summary["padding_share"] < 0.5
    # retention still scores the general task, next to the domain table
    assert [r.task for r in result.retention] == ["movie_reviews_lm"]
    report = run.report_md.read_text()
    assert "## Domain text (held-out documents, before -> after)" in report
    assert report.index("## Domain text") < report.index("## Retention (forgetting)")
    assert f"{rows[0]['before']:.3f}" in report and f"{rows[0]['after']:.3f}" in report
    html = (result.run_dir / "report.html").read_text()
    assert "Domain text" in html and f"{rows[0]['after']:.3f}" in html


def test_eval_task_scores_held_out_domain_text(text_run, tmp_path: Path) -> None:
    """`tunelab eval --task FILE` with a perplexity task over the same held-out documents gives
    the run's own numbers: the base model's and the fine-tune's."""
    config, result = text_run
    task = {"name": "domain_lm", "output_type": "loglikelihood_rolling",
            "data": {"source": str(REVIEWS), "template": "text", "test_size": 8,
                     "validation_size": 4},
            "rolling": {"max_length": 128}, "eval": {"metrics": ["perplexity"]}}
    path = tmp_path / "domain_lm.yaml"
    path.write_text(yaml.safe_dump(task))
    rows = {r["key"]: r for r in result.summary["domain"]["rows"]}
    tuned = tmp_path / "tuned"
    assert main(["eval", "--task", str(path), "--adapter", str(result.run_dir),
                 "--out", str(tuned)]) == 0
    assert read_result(EvalDir(tuned)).scores["perplexity"] == pytest.approx(
        rows["perplexity"]["after"], rel=1e-5)
    base = tmp_path / "base"
    assert main(["eval", "--task", str(path), "--model", config.model.name,
                 "--out", str(base)]) == 0
    assert read_result(EvalDir(base)).scores["perplexity"] == pytest.approx(
        rows["perplexity"]["before"], rel=1e-5)


def test_a_text_task_in_a_mixture_is_scored_by_perplexity(tiny_llama: Path, tmp_path: Path) -> None:
    """A mixture of raw text and an instruction task: the text task's validation metric during
    training and its test score are perplexity, and only it gets a before -> after row."""
    text = TrainTaskConfig(name="domain", data=DataConfig(source=str(REVIEWS), template="text",
                                                          test_size=6, validation_size=4,
                                                          max_length=128))
    completion = TrainTaskConfig(
        name="completion",
        data=DataConfig(source=str(DATA / "prompt_completion.jsonl"), template="alpaca",
                        test_size=2, validation_size=2, max_length=96),
        eval=EvalConfig(metrics=["exact_match"],
                        generation=GenerationConfig(max_new_tokens=4, batch_size=4)))
    config = replace(tiny_run_config(tiny_llama, tmp_path, max_steps=4, eval_every=2),
                     tasks=[text, completion],
                     mixture=MixtureConfig(sampling="uniform", oversample=True, eval_limit=2))
    result = tunelab.train(config)
    evals = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text()
             .splitlines() if "metrics_by_task" in line]
    assert evals and all("perplexity" in r["metrics_by_task"]["domain"] for r in evals)
    assert all("exact_match" in r["metrics_by_task"]["completion"] for r in evals)
    rows = result.summary["domain"]["rows"]
    assert {r["task"] for r in rows} == {"domain"} and rows[0]["n"] == 6
    before = read_result(RunDir(result.run_dir).eval_dir(System.base()).task("domain"))
    assert before.scores["perplexity"] == pytest.approx(rows[0]["before"])
    assert result.summary["test_scores"]["domain"]["perplexity"] == pytest.approx(rows[0]["after"])
