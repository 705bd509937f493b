"""`tunelab predict RUN --input FILE`: a trained run's predictions on new inputs, for each model
kind (causal, seq2seq, classifier), with the run's own template and settings. The prediction
equals the run's evaluation's on the same items; rows are kept as they were; JSONL, CSV and
Parquet in and out; and one-line errors (exit 2) for what a user can fix."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import build_tokenizer
from helpers import DATA, tiny_run_config

import tunelab
from tunelab.cli import main
from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
)
from tunelab.core.errors import TunelabError
from tunelab.data import load_splits
from tunelab.data.sources import input_record
from tunelab.eval.output_types import Framing, Request, get_output_type
from tunelab.runs import RunDir, System, read_config
from tunelab.runs.run_dir import scoring_run_model

LABELS = ["positive", "negative"]


def _save_tiny(path: Path, family: str) -> Path:
    """A tiny Llama, T5 or bare BERT encoder (tunelab adds the head) with the tests' tokenizer,
    its random weights large so that what it predicts depends on the input (at the usual 0.02
    scale a tiny model says the same whatever it is given)."""
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    tok = build_tokenizer(path)
    vocab, pad, eos, bos = len(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    torch.manual_seed(0)
    model: Any
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
            eos_token_id=eos, pad_token_id=pad, bos_token_id=bos, initializer_range=1.0))
    elif family == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
            num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0, pad_token_id=pad,
            eos_token_id=eos, decoder_start_token_id=pad, initializer_factor=50.0))
    else:
        model = BertModel(BertConfig(
            vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=256, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, pad_token_id=pad, initializer_range=1.0))
    model.save_pretrained(path)
    return path


def _kind_config(model_dir: Path, out: Path, kind: str) -> RunConfig:
    """A 2-step LoRA run on the 40 test reviews (test 8), format template over `text`."""
    metrics = ["classification"] if kind == "classifier" else ["exact_match"]
    return RunConfig(
        name=kind, output_dir=str(out), model=ModelConfig(name=str(model_dir), kind=kind),
        data=DataConfig(source=str(DATA / "reviews.jsonl"), fields={"input": "text", "output": "label"},
                        template="format",
                        prompt_format="{input}" if kind == "classifier" else "Review: {input}\nSentiment:",
                        test_size=8, validation_size=4, max_length=64),
        method={"name": "lora", "r": 4, "dropout": 0.0},
        train=TrainConfig(max_steps=2, batch_size=4, lr=1e-2, log_every=1, warmup_ratio=0.0),
        eval=EvalConfig(metrics=metrics, labels=list(LABELS), bootstrap=0,
                        generation=GenerationConfig(max_new_tokens=3, batch_size=4)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained run of each model kind (2 steps each, evaluated on its 8 test reviews)."""
    out = tmp_path_factory.mktemp("predict-runs")
    llama = _save_tiny(tmp_path_factory.mktemp("llama"), "llama")
    causal = tiny_run_config(llama, out, "causal", max_steps=2, eval_every=0)
    causal.eval.metrics, causal.eval.bootstrap = ["exact_match"], 0
    configs = [causal] + [_kind_config(_save_tiny(tmp_path_factory.mktemp(family), family), out, kind)
                          for family, kind in (("t5", "seq2seq"), ("bert", "classifier"))]
    return {config.name: tunelab.train(config).run_dir for config in configs}


def _test_rows(run: Path, drop: str | None = "label") -> list[dict[str, Any]]:
    """The run's test items as input rows (without the answer column)."""
    records = load_splits(read_config(run).data).test
    return [{k: v for k, v in r.columns.items() if k != drop} for r in records]


def _evaluated(run: Path) -> list[str]:
    """The predictions of the run's own evaluation (RUN/eval/fine-tuned), in item order."""
    path = RunDir(run).eval_dir(System.tuned()).predictions
    return [json.loads(line)["prediction"] for line in path.read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


# --- each model kind ------------------------------------------------------------------------

def test_causal_predictions_keep_the_rows_and_equal_the_evaluation(runs: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    rows = _test_rows(runs["causal"])
    source = _write_jsonl(tmp_path / "new.jsonl", rows)
    out = tunelab.predict(runs["causal"], source)
    assert out == tmp_path / "new.predictions.jsonl"
    written = _read_jsonl(out)
    assert [{k: v for k, v in r.items() if k != "prediction"} for r in written] == rows
    assert all(set(r) == {"text", "prediction"} and isinstance(r["prediction"], str) for r in written)
    # The same template (chat, with the run's instruction) and generation settings as the
    # run's evaluation: the same prediction for every item.
    predictions = [r["prediction"] for r in written]
    assert predictions == _evaluated(runs["causal"]) and len(set(predictions)) > 1


def test_seq2seq_csv_in_csv_out(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = _test_rows(runs["seq2seq"], drop=None)  # an answer column is kept, not needed
    source = tmp_path / "new.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows({"id": str(i), **row} for i, row in enumerate(rows))
    out = tunelab.predict(runs["seq2seq"], source)
    assert out == tmp_path / "new.predictions.csv"
    with out.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["id", "text", "label", "prediction"]
    assert [{k: r[k] for k in ("text", "label")} for r in written] == rows
    assert [r["id"] for r in written] == [str(i) for i in range(len(rows))]  # original order
    assert [r["prediction"] for r in written] == _evaluated(runs["seq2seq"])


def test_classifier_parquet_gives_labels_with_probabilities(runs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    rows = _test_rows(runs["classifier"])
    source = tmp_path / "new.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tunelab.predict(runs["classifier"], source)
    assert out == tmp_path / "new.predictions.parquet"
    written = pq.read_table(out).to_pylist()
    assert [r["text"] for r in written] == [r["text"] for r in rows]
    for r in written:
        assert r["prediction"] in LABELS and list(r["probabilities"]) == LABELS  # label order
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["prediction"] == max(LABELS, key=lambda label: r["probabilities"][label])
    assert [r["prediction"] for r in written] == _evaluated(runs["classifier"])
    assert len({r["probabilities"]["positive"] for r in written}) == len(rows)  # per input


def test_multiple_choice_predicts_the_choice_its_evaluation_picks(runs: dict[str, Path]) -> None:
    """A task that picks among choices predicts, on unanswered records, what `run` picks."""
    config = read_config(runs["causal"])
    task = TaskConfig(name="mc", output_type="multiple_choice", data=config.data,
                      choices=list(LABELS), eval=config.eval)
    answered = load_splits(config.data).test[:4]
    new = [input_record({"text": r.columns["text"]}, r.origin, config.data.fields,
                        config.data.instruction) for r in answered]
    lm = scoring_run_model(runs["causal"])
    output_type = get_output_type("multiple_choice")
    evaluated = output_type.run(Request(lm, task, answered, framing=Framing.of(task)))
    predicted = output_type.predict(Request(lm, task, new, framing=Framing.of(task)))
    assert [p["prediction"] for p in predicted] == evaluated.predictions
    assert all(p["prediction"] in LABELS for p in predicted)


def test_a_task_with_nothing_to_predict_is_one_line(runs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = read_config(runs["causal"])
    rolling = TaskConfig(name="lm", output_type="loglikelihood_rolling", data=config.data,
                         eval=EvalConfig(metrics=["perplexity"]))
    perplexity = TaskConfig(name="ppl", output_type="generate", data=config.data,
                            eval=EvalConfig(metrics=["perplexity"]))
    for task in (rolling, perplexity):
        request = Request(None, task, [])  # type: ignore[arg-type]  # refused before the model
        with pytest.raises(TunelabError, match="predict has nothing to predict") as info:
            get_output_type(task.output_type).predict(request)
        assert "\n" not in str(info.value)
    # A run whose evaluation only scored perplexity: refused before its model loads.
    run = tmp_path / "perplexity-run"
    shutil.copytree(runs["causal"], run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(
        "- exact_match", "- perplexity"))
    source = _write_jsonl(tmp_path / "new.jsonl", [{"text": "great fun"}])
    err = _one_line_error(capsys, ["predict", str(run), "--input", str(source)])
    assert "eval.metrics perplexity only score the likelihood" in err


# --- the command ----------------------------------------------------------------------------

def test_limit_predicts_the_first_rows(runs: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = _test_rows(runs["classifier"])
    source = _write_jsonl(tmp_path / "new.jsonl", rows)
    out = tmp_path / "sub" / "first.jsonl"
    assert main(["predict", str(runs["classifier"]), "--input", str(source), "--out", str(out),
                 "--limit", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"predictions: {out}")
    written = _read_jsonl(out)
    assert [r["text"] for r in written] == [r["text"] for r in rows[:3]]
    assert [r["prediction"] for r in written] == _evaluated(runs["classifier"])[:3]
    assert sorted(p.name for p in out.parent.iterdir()) == ["first.jsonl"]  # no temp file left


def test_a_missing_input_column_is_one_line(runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "x.csv"
    source.write_text("review,label\ngreat fun,positive\n")
    err = _one_line_error(capsys, ["predict", str(runs["causal"]), "--input", str(source)])
    assert f"--input {source}: no column 'text' (columns: review, label);" in err
    assert "rename" in err and "data.fields.input" in err
    assert not (tmp_path / "x.predictions.csv").exists()


def test_an_existing_out_is_refused_and_left_unchanged(runs: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_jsonl(tmp_path / "new.jsonl", _test_rows(runs["classifier"])[:2])
    out = tmp_path / "new.predictions.jsonl"
    out.write_text("keep me\n")
    err = _one_line_error(capsys, ["predict", str(runs["classifier"]), "--input", str(source)])
    assert f"--out {out}: exists" in err
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl", "new.predictions.jsonl"]


def test_a_run_that_is_missing_or_unfinished_is_one_line(runs: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_jsonl(tmp_path / "new.jsonl", [{"text": "great fun"}])
    err = _one_line_error(capsys, ["predict", str(tmp_path / "nope"), "--input", str(source)])
    assert "nope: no such run directory" in err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_bytes((runs["causal"] / "config.yaml").read_bytes())
    err = _one_line_error(capsys, ["predict", str(unfinished), "--input", str(source)])
    assert "no trained weights" in err
    err = _one_line_error(capsys, ["predict", str(runs["causal"]), "--input",
                                   str(tmp_path / "missing.jsonl")])
    assert "--input" in err and "no such file" in err
