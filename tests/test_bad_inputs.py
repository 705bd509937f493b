"""A corpus of bad inputs, as a new user makes them: every one ends in one line on stderr that
names the file, line or option (and the fix), exit code 2, no traceback; those that can be
caught without a model are caught before one loads; a failed start leaves nothing that blocks
the same command."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import DATA

from tunelab.cli import main

REVIEWS = DATA / "reviews.jsonl"


def run_yaml(model: str, out: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "bad", "output_dir": str(out / "runs"),
        "model": {"name": model},
        "data": {"source": str(REVIEWS), "fields": {"input": "text", "output": "label"},
                 "template": "chat", "test_size": 8, "validation_size": 4, "max_length": 64},
        "method": {"name": "lora", "r": 4},
        "train": {"max_steps": 2, "batch_size": 4},
        "eval": {"metrics": ["accuracy"], "labels": ["positive", "negative"]},
    }
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str
    """A fragment of the one-line message."""
    files: dict[str, Any] = field(default_factory=dict)
    """name -> text, bytes, or a dict (written as YAML)."""
    loads_model: bool = False
    """Only cases that need the model to find the problem may load one."""


def train_case(name: str, expect: str, **changes: Any) -> Case:
    return Case(name, ["train", "{tmp}/run.yaml"], expect, {"run.yaml": ("config", changes)})


def task_yaml(**changes: Any) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "t", "output_type": "generate",
                            "data": {"source": str(REVIEWS), "fields": {"input": "text",
                                                                       "output": "label"},
                                     "template": "format", "prompt_format": "{input}",
                                     "test_size": 4, "validation_size": 0},
                            "eval": {"metrics": ["accuracy"]}}
    task.update(changes)
    return task


CASES = [
    # ---- run configs: values -------------------------------------------------------------
    train_case("epochs negative", "train.epochs -1: must be a number > 0", train__epochs=-1,
               train__max_steps=0),
    train_case("max_steps negative", "train.max_steps -1: must be a whole number >= 0",
               train__max_steps=-1),
    train_case("grad_accum zero", "train.grad_accum 0: must be a whole number >= 1",
               train__grad_accum=0),
    train_case("batch_size zero", "train.batch_size 0: must be a whole number >= 1",
               train__batch_size=0),
    train_case("max_length zero", "data.max_length 0: must be a whole number >= 8",
               data__max_length=0),
    train_case("max_length tiny", "data.max_length 4: must be a whole number >= 8",
               data__max_length=4),
    train_case("lr negative", "train.lr -1: must be a number >= 0", train__lr=-1),
    train_case("lr text", "train.lr: cannot read 'fast' as float", train__lr="fast"),
    train_case("warmup past 1", "train.warmup_ratio 1.5: must be a number >= 0 and < 1",
               train__warmup_ratio=1.5),
    train_case("log_every zero", "train.log_every 0: must be a whole number >= 1",
               train__log_every=0),
    train_case("max_grad_norm negative", "train.max_grad_norm -1: must be", train__max_grad_norm=-1),
    train_case("weight_decay negative", "train.weight_decay -0.1: must be", train__weight_decay=-0.1),
    train_case("eval_every negative", "train.eval_every -5: must be", train__eval_every=-5),
    train_case("save_every fraction", "train.save_every: cannot read 2.5 as int",
               train__save_every=2.5),
    train_case("schedule unknown", "train.schedule 'step': use one of cosine", train__schedule="step"),
    train_case("on_divergence unknown", "train.on_divergence 'retry': use one of stop, skip_step",
               train__on_divergence="retry"),
    train_case("tracker unknown", "train.report_to 'wandb': use any of tensorboard, mlflow",
               train__report_to=["wandb"]),
    train_case("unknown train option", "unknown option 'epoch'", train__epoch=3),
    train_case("unknown section", "unknown option 'trainer'", trainer={"lr": 1}),
    train_case("method unknown", "qlora9", method={"name": "qlora9"}),
    train_case("method option unknown", "rank", method={"name": "lora", "rank": 8}),
    train_case("dtype unknown", "model.dtype 'fp8': use one of", model__dtype="fp8"),
    train_case("kind unknown", "model.kind 'vision': use one of", model__kind="vision"),
    train_case("num_layers zero", "model.num_layers 0: must be a whole number >= 1",
               model__num_layers=0),
    train_case("format unknown", "data.format 'xml': use one of", data__format="xml"),
    train_case("template unknown", "data.template 'jinja': use one of", data__template="jinja"),
    train_case("prompt_format positional", "data.prompt_format 'Review {0}': positional field {0} "
               "has no value; use named fields, e.g. {text}", data__template="format",
               data__prompt_format="Review {0}"),
    train_case("prompt_format empty field", "data.prompt_format 'Review {}': positional field {} ",
               data__template="format", data__prompt_format="Review {}"),
    Case("prompt_format bad format spec", ["data", "inspect", "{tmp}/run.yaml"],
         "data.prompt_format '{text:d}': Unknown format code 'd'",
         {"run.yaml": ("config", {"data__template": "format", "data__prompt_format": "{text:d}"})}),
    train_case("completion_format positional", "data.completion_format ' {0}': positional field",
               data__template="format", data__prompt_format="{text}", data__completion_format=" {0}"),
    train_case("validation_size negative", "data.validation_size -1: must be",
               data__validation_size=-1),
    train_case("augment share past 1", "data.augment.share 2: must be a number >= 0 and <= 1",
               data__augment={"perturbations": ["typo"], "share": 2}),
    train_case("augment perturbation unknown", "nope", data__augment={"perturbations": ["nope"]}),
    train_case("metric unknown", "unknown metric 'bleurt'", eval__metrics=["bleurt"]),
    train_case("metric of another output type", "'multiple_choice' does not apply to output_type generate",
               eval__metrics=["multiple_choice"]),
    train_case("max_new_tokens zero", "eval.generation.max_new_tokens 0: must be",
               eval__generation={"max_new_tokens": 0}),
    train_case("config eval limit zero", "eval.limit 0: must be a whole number >= 1", eval__limit=0),
    train_case("config eval shots negative", "eval.shots -2: must be", eval__shots=-2),
    train_case("retention task unknown", "no_such_task", retention={"tasks": ["no_such_task"]}),
    train_case("retention limit zero", "retention.limit 0: must be", retention={"tasks": [], "limit": 0}),
    train_case("mixture sampling unknown", "mixture.sampling 'mixed'", mixture={"sampling": "mixed"}),
    train_case("robustness probe unknown", "nope", robustness={"perturbations": ["nope"]}),
    train_case("bias probe unknown", "nope", bias={"probes": ["nope"]}),
    # ---- run configs: files ----------------------------------------------------------------
    Case("config missing", ["train", "{tmp}/nowhere.yaml"], "no such config file"),
    Case("yaml syntax", ["train", "{tmp}/run.yaml"], "fix the YAML syntax",
         {"run.yaml": "name: [unclosed\n"}),
    Case("yaml not a mapping", ["train", "{tmp}/run.yaml"], "expected a YAML mapping",
         {"run.yaml": "- a\n- b\n"}),
    Case("override without =", ["train", "{tmp}/run.yaml", "train.lr"], "expected KEY=VALUE",
         {"run.yaml": ("config", {})}),
    Case("override bad type", ["train", "{tmp}/run.yaml", "train.batch_size=eight"], "batch_size",
         {"run.yaml": ("config", {})}),
    Case("override into a value", ["train", "{tmp}/run.yaml", "name.x=1"], "'name' is not a section",
         {"run.yaml": ("config", {})}),
    train_case("data file missing", "no such file or directory; check data.source",
               data__source="{tmp}/missing.jsonl"),
    Case("jsonl malformed line", ["train", "{tmp}/run.yaml"], "bad.jsonl:2: malformed JSON",
         {"bad.jsonl": '{"text": "a", "label": "positive"}\n{"text": "b", label}\n',
          "run.yaml": ("config", {"data__source": "{tmp}/bad.jsonl"})}),
    Case("jsonl not utf-8", ["train", "{tmp}/run.yaml"], "latin.jsonl:2: byte 0xe9 is not UTF-8",
         {"latin.jsonl": b'{"text": "a", "label": "positive"}\n{"text": "caf\xe9", "label": "negative"}\n',
          "run.yaml": ("config", {"data__source": "{tmp}/latin.jsonl"})}),
    Case("binary named jsonl", ["train", "{tmp}/run.yaml"], "binary data is not UTF-8",
         {"blob.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
          "run.yaml": ("config", {"data__source": "{tmp}/blob.jsonl"})}),
    Case("jsonl row not an object", ["train", "{tmp}/run.yaml"], "list.jsonl:1: expected a JSON object",
         {"list.jsonl": '["a", "positive"]\n',
          "run.yaml": ("config", {"data__source": "{tmp}/list.jsonl"})}),
    Case("jsonl empty", ["train", "{tmp}/run.yaml"], "empty.jsonl: no examples found",
         {"empty.jsonl": "\n\n", "run.yaml": ("config", {"data__source": "{tmp}/empty.jsonl"})}),
    train_case("field not in data", "label_text", data__fields={"input": "text", "output": "label_text"}),
    Case("chat role unknown", ["train", "{tmp}/run.yaml"], "chat.jsonl:1: message role 'bot'",
         {"chat.jsonl": json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "bot", "content": "yo"}]}) + "\n",
          "run.yaml": ("config", {"data__source": "{tmp}/chat.jsonl", "data__fields": {}})}),
    Case("chat last turn not assistant", ["train", "{tmp}/run.yaml"], "the last message must be the assistant's",
         {"chat.jsonl": json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n",
          "run.yaml": ("config", {"data__source": "{tmp}/chat.jsonl", "data__fields": {}})}),
    Case("chat message without content", ["train", "{tmp}/run.yaml"], "each message needs 'role' and 'content'",
         {"chat.jsonl": json.dumps({"messages": [{"role": "user"},
                                                 {"role": "assistant", "content": "x"}]}) + "\n",
          "run.yaml": ("config", {"data__source": "{tmp}/chat.jsonl", "data__fields": {}})}),
    Case("parquet not parquet", ["train", "{tmp}/run.yaml"], "not a readable Parquet file",
         {"fake.parquet": b"this is text", "run.yaml": ("config", {"data__source": "{tmp}/fake.parquet"})}),
    Case("text file empty", ["train", "{tmp}/run.yaml"],
         "{tmp}/empty.txt: an empty text file; fill it in or remove it",
         {"empty.txt": "\n  \n", "run.yaml": ("config", {"data__source": "{tmp}/empty.txt",
                                                          "data__template": "text",
                                                          "data__fields": {}})}),
    train_case("text column missing", "data.fields.text: column 'text' is in no row",
               data__source=str(DATA / "alpaca.jsonl"), data__template="text", data__fields={}),
    train_case("text on a seq2seq model", "model.kind seq2seq does not train on raw documents",
               data__template="text", data__fields={}, model__kind="seq2seq"),
    train_case("train split empty", "leave an empty train split with test_size=0.5",
               data__validation_size=0.5, data__test_size=0.5),
    Case("output dir under a file", ["train", "{tmp}/run.yaml"], "cannot write the run directory",
         {"afile": "x", "run.yaml": ("config", {"output_dir": "{tmp}/afile/runs"})}),
    # ---- eval, score, tasks ----------------------------------------------------------------
    Case("eval shots negative", ["eval", "--task", "movie_sentiment", "--shots", "-1"], "--shots -1: must be"),
    Case("eval limit zero", ["eval", "--task", "movie_sentiment", "--limit", "0"], "--limit 0: must be a whole number >= 1"),
    Case("eval limit negative", ["eval", "--task", "movie_sentiment", "--limit", "-1"], "--limit -1: must be"),
    Case("eval task unknown", ["eval", "--task", "no_such_task"], "task 'no_such_task': unknown"),
    Case("eval out is a file", ["eval", "--task", "movie_sentiment", "--out", "{tmp}/afile"], "--out {tmp}/afile: is a file",
         {"afile": "x"}),
    Case("eval adapter missing", ["eval", "--task", "movie_sentiment", "--adapter", "{tmp}/norun"], "not a tunelab run directory"),
    Case("eval baselines unknown", ["eval", "--task", "movie_sentiment", "--baselines", "many"], "many"),
    Case("task missing choices", ["tasks", "validate", "{tmp}/mc.yaml"], "{tmp}/mc.yaml line ",
         {"mc.yaml": task_yaml(output_type="multiple_choice", eval={"metrics": ["multiple_choice"]})}),
    Case("eval task missing choices", ["eval", "--task", "{tmp}/mc.yaml"],
         "add choices: (a column name or a list) or eval.labels to the task file",
         {"mc.yaml": task_yaml(output_type="multiple_choice", eval={"metrics": ["multiple_choice"]})}),
    Case("task prompt_format positional", ["tasks", "validate", "{tmp}/pf.yaml"],
         "data.prompt_format 'Q: {0}': positional field {0}",
         {"pf.yaml": task_yaml(data={"source": str(REVIEWS), "fields": {"input": "text",
                                                                       "output": "label"},
                                     "template": "format", "prompt_format": "Q: {0}"})}),
    Case("task target column missing", ["tasks", "validate", "{tmp}/tgt.yaml"], "tgt.yaml",
         {"tgt.yaml": task_yaml(target="answers")}),
    Case("task output type unknown", ["tasks", "validate", "{tmp}/ot.yaml"], "output_type 'chat'",
         {"ot.yaml": task_yaml(output_type="chat")}),
    Case("task file missing", ["tasks", "validate", "{tmp}/none.yaml"], "none.yaml"),
    Case("score empty files", ["score", "-m", "accuracy", "-p", "{tmp}/p.txt", "-r", "{tmp}/r.txt"], "p.txt",
         {"p.txt": "", "r.txt": ""}),
    Case("score lengths differ", ["score", "-m", "accuracy", "-p", "{tmp}/p.txt", "-r", "{tmp}/r.txt"], "r.txt",
         {"p.txt": "a\nb\n", "r.txt": "a\n"}),
    Case("score metric unknown", ["score", "-m", "bleurt", "-p", "{tmp}/p.txt", "-r", "{tmp}/r.txt"], "bleurt",
         {"p.txt": "a\n", "r.txt": "a\n"}),
    Case("resume no run", ["train", "{tmp}/run.yaml", "--resume"], "--resume: no run in",
         {"run.yaml": ("config", {})}),
    Case("merge no run", ["merge", "{tmp}/norun", "--out", "{tmp}/merged"], "not a tunelab run directory"),
    Case("compare missing dirs", ["compare", "{tmp}/a", "{tmp}/b"], "no such directory"),
]


def write_files(case: Case, tmp: Path, model: str) -> None:
    for name, content in case.files.items():
        path = tmp / name
        if isinstance(content, tuple):  # ("config", changes): a run config from run_yaml
            changes = {k: fill(v, tmp) for k, v in content[1].items()}
            content = run_yaml(model, tmp, **changes)
        if isinstance(content, dict):
            path.write_text(yaml.safe_dump(fill(content, tmp)))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: fill(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, tmp) for v in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clean_line(case: Case, tiny_llama: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import tunelab.runs.start as run_module  # where a run loads its starting model

    if not case.loads_model:
        def no_model(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a model was loaded before the bad input was found")
        monkeypatch.setattr(run_module, "load_model", no_model)
    write_files(case, tmp_path, str(tiny_llama))
    argv = [fill(a, tmp_path) for a in case.argv]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tunelab: error: "), err
    assert "Traceback" not in err
    assert fill(case.expect, tmp_path) in lines[0], lines[0]
    if argv[0] == "train" and "--resume" not in argv:
        assert not (tmp_path / "runs" / "bad").exists()  # nothing that blocks the same command


def test_corpus_size() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": {"batch_size": 0}}))
    from tunelab.core.errors import TunelabError
    with pytest.raises(TunelabError, match="train.batch_size 0"):
        main(["--debug", "train", str(tmp_path / "run.yaml")])


def one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a bad input ends in (exit 2, no traceback)."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "eval"])
def test_multiple_choice_without_choices_names_the_task_file(
        command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tunelab.config import yaml_line

    path = tmp_path / "mc.yaml"
    path.write_text(yaml.safe_dump(task_yaml(output_type="multiple_choice",
                                             eval={"metrics": ["multiple_choice"]})))
    argv = ["tasks", "validate", str(path)] if command == "validate" else [
        "eval", "--task", str(path)]
    line = yaml_line(path, ["output_type"])
    assert line is not None
    assert one_error_line(argv, capsys) == (
        f"tunelab: error: {path} line {line}: multiple_choice needs choices, and {REVIEWS}:1 "
        "has no 'choices' column; add choices: (a column name or a list) or eval.labels to the "
        "task file")


@pytest.mark.parametrize(("option", "text"), [("prompt_format", "Review {0}"),
                                              ("prompt_format", "{text} {}"),
                                              ("prompt_format", "{text:{0}}"),
                                              ("completion_format", " {0[0]}")])
def test_positional_format_field_names_the_option_and_file(
        option: str, text: str, tiny_llama: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tunelab.config import yaml_line

    config = run_yaml(str(tiny_llama), tmp_path, data__template="format",
                      data__prompt_format="Review: {text}\nSentiment:")
    config["data"][option] = text
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    where = f"{path} line {yaml_line(path, ['data', option])}: data.{option} {text!r}: "
    for argv in (["train", str(path)], ["data", "inspect", str(path)]):
        message = one_error_line(argv, capsys)
        assert message.startswith(f"tunelab: error: {where}positional field {{"), message
        assert message.endswith("use named fields, e.g. {text} (a column of the data) or {input}")
    assert not (tmp_path / "runs").exists()


def test_named_format_fields_still_render(tiny_llama: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = run_yaml(str(tiny_llama), tmp_path, data__template="format",
                      data__prompt_format="Review: {text}\nSentiment:",
                      data__completion_format=" {label}")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["data", "inspect", str(path), "-n", "1"]) == 0
    out = capsys.readouterr().out
    shown = re.search(rf"--- train example 0 \({re.escape(str(REVIEWS))}:(\d+)\) ---", out)
    assert shown is not None, out
    record = json.loads(REVIEWS.read_text().splitlines()[int(shown.group(1)) - 1])
    assert f"Review: {record['text']}\nSentiment:⟦ {record['label']}" in out, out


def test_a_librarys_error_is_quoted_by_what_it_says() -> None:
    """A library error whose first line only introduces the next (torch's state_dict errors)
    is quoted with that next line; an empty one by its type."""
    from tunelab.core.errors import first_line

    mismatch = RuntimeError("Error(s) in loading state_dict for PeftModelForCausalLM:\n\t"
                            "size mismatch for lora_A.weight: copying a param with shape [4, 16]")
    assert first_line(mismatch) == ("Error(s) in loading state_dict for PeftModelForCausalLM: "
                                    "size mismatch for lora_A.weight: copying a param with shape "
                                    "[4, 16]")
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(KeyError()) == "KeyError" and len(first_line(OSError("x" * 500))) == 200
