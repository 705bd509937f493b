"""Mapping mistakes are refused, not trained on: a data.fields column no row has, a mapped column
that is empty in every row, a CSV with only a header, and a misspelt config option each end in one
line naming the file (and line or option) and the fix, before any model loads or run directory
is made."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import DATA

from tunelab.cli import main
from tunelab.core.errors import TunelabError
from tunelab.data.sources import read_records

REVIEWS = list(csv.DictReader((DATA / "reviews.csv").open(encoding="utf-8")))[:30]
"""30 real (text, label) rows: the question,answer file a new user starts with."""


def qa_csv(path: Path, blank_questions: int = 0) -> Path:
    """`question,answer` rows from reviews.csv; the first `blank_questions` have no question."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        for i, row in enumerate(REVIEWS):
            writer.writerow(["" if i < blank_questions else row["text"], row["label"]])
    return path


def run_config(path: Path, model: Path, source: Path, fields: dict[str, str],
               **data: Any) -> Path:
    config = {
        "name": "qa", "output_dir": str(path.parent / "runs"),
        "model": {"name": str(model)},
        "data": {"source": str(source), "fields": fields, "template": "chat",
                 "test_size": 4, "validation_size": 2, "max_length": 64, **data},
        "method": {"name": "lora", "r": 4},
        "train": {"max_steps": 1, "batch_size": 2},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if training gets as far as loading the model."""
    import tunelab.runs.start as train_module  # where a run loads its starting model

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the bad data was found")
    monkeypatch.setattr(train_module, "load_model", refuse)


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line (without the 'tunelab: error: ' prefix) a refused command prints; exit 2."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert lines[0].startswith("tunelab: error: "), lines[0]
    return lines[0].removeprefix("tunelab: error: ")


def test_a_misspelt_column_is_refused_by_inspect_and_train(
        tiny_llama: Path, tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = qa_csv(tmp_path / "qa.csv")
    config = run_config(tmp_path / "run.yaml", tiny_llama, data,
                        {"input": "questoin", "output": "answer"})
    expected = (f"data.fields.input: column 'questoin' is in no row of {data} "
                "(columns: question, answer); did you mean 'question'?")
    assert one_error_line(["data", "inspect", str(config)], capsys) == expected
    assert one_error_line(["train", str(config)], capsys) == expected
    assert not (tmp_path / "runs").exists()  # nothing half-made that blocks the fixed command


def test_a_column_with_no_close_match_lists_the_columns(tmp_path: Path) -> None:
    data = qa_csv(tmp_path / "qa.csv")
    with pytest.raises(TunelabError, match=r"column 'sentiment' is in no row of .*qa\.csv \(columns: "
                       r"question, answer\); map data\.fields\.output to one of them$"):
        read_records(str(data), fields={"input": "question", "output": "sentiment"})


def test_a_column_in_only_some_jsonl_rows_is_mapped(tmp_path: Path) -> None:
    import json

    data = tmp_path / "mixed.jsonl"
    rows = [{"question": REVIEWS[0]["text"], "answer": REVIEWS[0]["label"]},
            {"question": REVIEWS[1]["text"], "answer": REVIEWS[1]["label"],
             "hint": "a movie review"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    records = read_records(str(data), fields={"input": "question", "output": "answer",
                                              "instruction": "hint"})
    assert [r.instruction for r in records] == ["", "a movie review"]
    assert records[0].input == REVIEWS[0]["text"]


def test_a_mapped_column_empty_in_every_row_is_refused(
        tiny_llama: Path, tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = qa_csv(tmp_path / "qa.csv", blank_questions=len(REVIEWS))
    config = run_config(tmp_path / "run.yaml", tiny_llama, data,
                        {"input": "question", "output": "answer"})
    expected = (f"{data}: column 'question' (data.fields.input) is empty in every row; fill it in, "
                "or map data.fields.input to the column that holds the input")
    assert one_error_line(["data", "inspect", str(config)], capsys) == expected
    assert one_error_line(["train", str(config)], capsys) == expected
    assert not (tmp_path / "runs").exists()


def test_an_unmapped_answer_column_empty_in_every_row_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "io.csv"
    data.write_text("input,output\n" + "".join(f"\"{row['text']}\",\n" for row in REVIEWS[:5]))
    with pytest.raises(TunelabError, match=r"io\.csv: column 'output' is empty in every row; "):
        read_records(str(data))


def test_a_few_empty_cells_are_read(tiny_llama: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = qa_csv(tmp_path / "qa.csv", blank_questions=3)
    records = read_records(str(data), fields={"input": "question", "output": "answer"})
    assert len(records) == len(REVIEWS)
    assert [r.input for r in records[:4]] == ["", "", "", REVIEWS[3]["text"]]
    config = run_config(tmp_path / "run.yaml", tiny_llama, data,
                        {"input": "question", "output": "answer"})
    assert main(["data", "inspect", str(config), "-n", "1"]) == 0, capsys.readouterr().err


def test_a_header_only_csv_says_so(tiny_llama: Path, tmp_path: Path, no_model: None,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "qa.csv"
    data.write_text("question,answer\n")
    config = run_config(tmp_path / "run.yaml", tiny_llama, data,
                        {"input": "question", "output": "answer"})
    expected = (f"{data}: no rows (only a header: question, answer); "
                "add examples below the header")
    assert one_error_line(["data", "inspect", str(config)], capsys) == expected
    assert one_error_line(["train", str(config)], capsys) == expected
    assert not (tmp_path / "runs").exists()
    data.write_text("")
    assert one_error_line(["data", "inspect", str(config)], capsys) == (
        f"{data}: no examples found; the file is empty")


def test_a_misspelt_option_names_its_line_and_the_nearest_option(
        tiny_llama: Path, tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = qa_csv(tmp_path / "qa.csv")
    config = run_config(tmp_path / "run.yaml", tiny_llama, data,
                        {"input": "question", "output": "answer"})
    text = config.read_text().replace("  fields:", "  feilds:")
    config.write_text(text)
    line = text.splitlines().index("  feilds:") + 1
    message = one_error_line(["train", str(config)], capsys)
    assert message.startswith(f"{config} line {line}: data.feilds: unknown option 'feilds'; "
                              "did you mean 'fields'? (valid options: "), message
    assert "fields, format" in message and message.endswith(")")
    assert not (tmp_path / "runs").exists()
    # an override moves the lines: no line then, but still the nearest option
    config.write_text(text.replace("  feilds:", "  fields:"))
    message = one_error_line(["data", "inspect", str(config), "train.max_step=3"], capsys)
    assert "unknown option 'max_step'; did you mean 'max_steps'? (valid options: " in message
    # several unknown options: all of them in the one line, so one edit fixes the config
    message = one_error_line(["data", "inspect", str(config), "train.max_step=3",
                              "train.lrate=1"], capsys)
    assert message.endswith("command line: train: unknown options 'max_step', 'lrate'; valid options: "
                            "batch_size, divergence_factor, early_stopping_patience, epochs, "
                            "eval_every, fsdp, grad_accum, gradient_checkpointing, "
                            "group_by_length, log_every, lr, max_grad_norm, max_seconds, "
                            "max_steps, on_divergence, precision, report_to, save_every, "
                            "schedule, seed, threads, warmup_ratio, weight_decay"), message
    message = one_error_line(["data", "inspect", str(config), "foo=1", "bar=2"], capsys)
    assert message.startswith("command line: unknown options 'foo', 'bar'; valid options: "), \
        message
    # a method switched on the command line: every option the new method lacks, at once
    message = one_error_line(["train", str(config), "method.dropout=0.1", "method.name=full"],
                             capsys)
    assert message.endswith("method (full): unknown options 'r', 'dropout'; valid options: none"), \
        message
