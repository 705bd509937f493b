"""The CLI: thin commands over the API; user errors print one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import DATA, tiny_run_config

from tunelab.cli import main
from tunelab.config import load_run_config, to_dict


def _write_config(tiny_llama: Path, tmp_path: Path, **changes) -> Path:
    config = to_dict(tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=2, eval_every=0))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  name: x\n train: [\n")
    assert "bad.yaml line" in _one_line_error(capsys, ["train", str(bad_yaml)])
    assert "no such config file" in _one_line_error(capsys, ["train", str(tmp_path / "nope.yaml")])
    config = _write_config(tiny_llama, tmp_path)
    err = _one_line_error(capsys, ["train", str(config), "train.lrr=1"])
    assert "unknown option 'lrr'" in err and "lr" in err
    err = _one_line_error(capsys, ["train", str(config), "model.name=no-such-model"])
    assert "model 'no-such-model'" in err and "smollm2-135m" in err
    err = _one_line_error(capsys, ["train", str(config), "data.template=vicuna"])
    assert "command line: data.template 'vicuna': use one of" in err  # where the value came from
    err = _one_line_error(capsys, ["train", str(config), "data.fields={output: sentiment}"])
    assert "data.fields.output: column 'sentiment' is in no row of " in err
    assert "reviews.jsonl (columns: text, label)" in err
    err = _one_line_error(capsys, ["train", str(config), "data.test_size=30", "data.validation_size=10"])
    assert "examples leave an empty train split with test_size=30 and validation_size=10" in err
    err = _one_line_error(capsys, ["train", str(config), "method.name=magic"])
    assert "method.name 'magic'" in err and "lora" in err
    err = _one_line_error(capsys, ["train", str(config), "train.lr=fast"])
    assert "command line: train.lr: cannot read 'fast'" in err
    err = _one_line_error(capsys, ["train", str(config), "data.packing=2"])
    assert "command line: data.packing: cannot read 2 as bool" in err  # no switch, not True
    err = _one_line_error(capsys, ["train", str(config), "--no-eval", "train.lr=-1"])
    assert "command line: train.lr -1: must be a number >= 0" in err  # after an option too
    err = _one_line_error(capsys, ["eval", "--task", "nope"])
    assert "task 'nope'" in err and "movie_sentiment" in err


def test_train_then_eval_with_adapter(tiny_llama: Path, tmp_path: Path, capsys,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write_config(tiny_llama, tmp_path)
    assert main(["train", str(config), "name=cli"]) == 0
    run_dir = tmp_path / "runs" / "cli"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    task = tmp_path / "task.yaml"
    loaded = load_run_config(config)
    task.write_text(yaml.safe_dump({"name": "reviews", "data": to_dict(loaded.data),
                                    "eval": to_dict(loaded.eval)}))
    capsys.readouterr()
    assert main(["eval", "--adapter", str(run_dir), "--task", str(task), "--shots", "1",
                 "--limit", "4", "--json", "--out", str(tmp_path / "ev")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 4 and result["shots"] == 1 and "accuracy" in result["scores"]
    rows = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 4 and "prediction" in json.loads(rows[0])
    # --nproc 2: a worker process loads the run's weights and scores half the items; the
    # results equal one process's (the result cache is off, so every item really runs).
    monkeypatch.setenv("TUNELAB_EVAL_CACHE", "off")
    assert main(["eval", "--adapter", str(run_dir), "--task", str(task), "--shots", "1",
                 "--limit", "4", "--json", "--nproc", "2", "--out", str(tmp_path / "ev2")]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["scores"] == result["scores"] and two["n"] == 4
    assert (tmp_path / "ev2" / "predictions.jsonl").read_text().splitlines() == rows


def test_data_inspect_marks_trained_tokens(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    config = _write_config(tiny_llama, tmp_path)
    assert main(["data", "inspect", str(config), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "train: 28 examples" in out
    assert "⟦negative<|im_end|>⟧" in out or "⟦positive<|im_end|>⟧" in out
    assert "-100" in out and "train" in out


def test_score_command_text_and_json(tmp_path: Path, capsys) -> None:
    preds = tmp_path / "pred.txt"
    refs = tmp_path / "ref.txt"
    preds.write_text("the cat sat on the mat\npositive\n")
    refs.write_text("the cat sat on a mat\nPositive\n")
    assert main(["score", "-m", "bleu,exact_match", "-p", str(preds), "-r", str(refs), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["exact_match"]["scores"]["exact_match"] == 100.0
    assert "nrefs:1" in result["bleu"]["signature"]
    assert main(["score", "-m", "rouge", "-p", str(preds), "-r", str(refs)]) == 0
    assert "rouge1" in capsys.readouterr().out
    refs.write_text("only one line\n")
    assert "has 2 lines but" in _one_line_error(capsys, ["score", "-m", "f1", "-p", str(preds), "-r", str(refs)])


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "tunelab.cli", "score", "-m", "nope", "-p",
                           str(DATA / "reviews.csv"), "-r", str(DATA / "reviews.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "nope" in done.stderr


def test_eval_takes_baselines_none_as_robustness_and_bias_do(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    """`--baselines none` means no baselines in every command (eval refused it before)."""
    import tunelab

    asked: list[object] = []

    class Shown:
        def render(self, as_json: bool) -> str:
            return "table"

    def evaluate(task: str, **options: object) -> Shown:
        asked.append(options["baselines"])
        return Shown()
    monkeypatch.setattr(tunelab, "evaluate", evaluate)
    for given in (["--baselines", "none"], [], ["--baselines", "zero,few"]):
        assert main(["eval", "--task", "movie_sentiment", *given]) == 0
    assert asked == [[], None, ["zero", "few"]] and "table" in capsys.readouterr().out
