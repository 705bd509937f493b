"""`tunelab harness` as lm-eval's CLI runs: --apply_chat_template renders every prompt with the
tokenizer's chat template, --output DIR gets lm-eval's results JSON and --log-samples one
samples JSONL per task beside it, one line per item holding the model's own responses; bad
flags end in one line, exit 2, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval.models.huggingface import HFLM
from test_harness_parity import encoder_decoder, requests, write_tasks
from transformers import AutoTokenizer

from tunelab.cli import main
from tunelab.config import ModelConfig
from tunelab.eval.harness import TunelabLM, task_manager
from tunelab.models import load_model


def test_chat_template_output_and_samples(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    tasks = write_tasks(tmp_path, until=(".",))  # the tiny model writes newlines: keep them
    out = tmp_path / "out"
    assert main(["harness", "--tasks", "tiny_mc,tiny_gen", "--model", str(tiny_llama),
                 "--include-path", str(tasks), "--limit", "3", "--apply_chat_template",
                 "--log-samples", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny_mc" in printed and "tiny_gen" in printed and "acc" in printed
    files = [Path(line.removeprefix("wrote ")) for line in printed.splitlines()
             if line.startswith("wrote ")]
    assert len(files) == 3 and all(f.is_file() and out in f.parents for f in files)
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    results = json.loads(next(f for f in files if f.name.startswith("results_")).read_text())
    assert set(results["results"]) == {"tiny_mc", "tiny_gen"}
    assert results["chat_template"] == lm.tokenizer.chat_template

    ours = TunelabLM(lm=lm)
    for task, kind in (("tiny_mc", "loglikelihood"), ("tiny_gen", "generate_until")):
        path = next(f for f in files if f.name.startswith(f"samples_{task}_"))
        samples = [json.loads(line) for line in path.read_text().splitlines()]
        assert [s["doc_id"] for s in samples] == [0, 1, 2]  # one line per item
        for sample in samples:
            args = [tuple(a.values()) for a in sample["arguments"].values()]
            assert all(a[0].startswith("<|im_start|>user\nReview: ") for a in args)
            answers = getattr(ours, kind)(requests(kind, args))  # the model, asked again
            if kind == "loglikelihood":
                logged = [float(r[0][0]) for r in sample["resps"]]
                assert logged == pytest.approx([lp for lp, _ in answers], abs=1e-5)
                assert len(logged) == 2 and sample["acc"] in (0.0, 1.0)
            else:
                assert sample["resps"] == [[text] for text in answers]
                assert answers[0]  # text was written (newlines) and logged
                assert sample["filtered_resps"] == answers


@pytest.mark.parametrize("flags,message", [
    (["--log-samples"], "--log-samples: the samples are written beside the results; add --output DIR"),
    (["--output", "FILE"], "is a file; give a directory (or a .json path)"),
], ids=["log-samples-alone", "output-is-a-file"])
def test_bad_output_flags_are_one_line(tmp_path: Path, capsys, flags, message) -> None:
    (tmp_path / "FILE").write_text("taken")
    flags = [str(tmp_path / f) if f == "FILE" else f for f in flags]
    assert main(["harness", "--tasks", "tiny_mc", "--model", str(tmp_path / "no-model"),
                 *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_chat_template_without_one_is_one_line(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "no-template"
    model.mkdir()
    for file in tiny_llama.iterdir():
        if file.name != "chat_template.jinja":
            (model / file.name).write_bytes(file.read_bytes())
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    tasks = str(write_tasks(tmp_path))
    assert main(["harness", "--tasks", "tiny_mc", "--model", str(model), "--include_path", tasks,
                 "--apply_chat_template"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no chat template" in err and len(err.splitlines()) == 1
    # a template name the tokenizer lacks: transformers would render the name as a template
    assert main(["harness", "--tasks", "tiny_mc", "--model", str(tiny_llama), "--include_path",
                 tasks, "--apply_chat_template", "nosuchtemplate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tunelab: error: --apply_chat_template nosuchtemplate: {tiny_llama}'s "
                   "tokenizer has no named ones; give one of them, or the flag alone for its "
                   "default")


def logged_run(tmp_path: Path, capsys, *flags: str) -> list[Path]:
    """`tunelab harness --tasks tiny_mc ... --log_samples --output_path OUT`: the files it
    wrote (results and samples)."""
    assert main(["harness", "--tasks", "tiny_mc", "--include_path", str(write_tasks(tmp_path)),
                 *flags, "--log_samples", "--output_path", str(tmp_path / "out")]) == 0
    return [Path(line.removeprefix("wrote ")) for line in capsys.readouterr().out.splitlines()
            if line.startswith("wrote ")]


def test_a_named_chat_template_writes_the_prompts(tiny_llama: Path, tmp_path: Path,
                                                  capsys) -> None:
    """--apply_chat_template NAME with a tokenizer that holds named templates: the prompts are
    that template's, and the results log it."""
    model = tmp_path / "two-templates"
    model.mkdir()
    for file in tiny_llama.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(model)
    terse = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}" \
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    tokenizer.chat_template = {"default": tokenizer.get_chat_template(), "terse": terse}
    tokenizer.save_pretrained(model)
    files = logged_run(tmp_path, capsys, "--model", str(model), "--limit", "2",
                       "--apply_chat_template", "terse")
    samples = next(f for f in files if f.name.startswith("samples_tiny_mc_")).read_text()
    prompts = [a["arg_0"] for s in map(json.loads, samples.splitlines())
               for a in s["arguments"].values()]
    assert len(prompts) == 4 and all(p.startswith("[user] Review: ") for p in prompts), prompts
    results = json.loads(next(f for f in files if f.name.startswith("results_")).read_text())
    assert results["chat_template"] == terse


@pytest.mark.parametrize("flags,message", [
    (["--tasks", "no_such_task"], "--tasks: no_such_task: no such task, group or tag in "
                                  "lm-eval's tasks or "),
    (["--tasks", "tiny_mcq"], "--tasks: tiny_mcq: no such task, group or tag in lm-eval's tasks "
                              "or "),
    (["--limit", "0"], "--limit 0: must be"),
    (["--limit", "-2"], "--limit -2: must be"),
    (["--shots", "-1"], "--shots -1: must be"),
    (["--batch-size", "0"], "--batch-size 0: must be"),
    (["--max_length", "0"], "--max-length 0: must be"),
    (["--include_path", "NOWHERE"], "--include_path NOWHERE: no such file or folder"),
    (["--adapter", "NOWHERE"], "NOWHERE: not a tunelab run directory"),
], ids=["task", "near-task", "limit-0", "limit-negative", "shots", "batch-size", "max-length",
        "include-path", "adapter"])
def test_bad_flags_are_one_line_before_the_model_loads(
        tmp_path: Path, capsys, monkeypatch, flags, message) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before the flags were checked")
    monkeypatch.setattr("tunelab.eval.harness.TunelabLM", no_model)
    tasks = str(write_tasks(tmp_path))
    flags = [str(tmp_path / f) if f == "NOWHERE" else f for f in flags]
    if "--tasks" not in flags:
        flags += ["--tasks", "tiny_mc"]
    if "--include_path" not in flags:
        flags += ["--include_path", tasks]
    assert main(["harness", "--model", "smollm2-135m", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message.replace("NOWHERE", str(tmp_path / "NOWHERE")) in err, err
    assert len(err.splitlines()) == 1


def test_max_length_sets_the_window(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    """--max_length 16: the logged log-likelihoods are those of a 16-token window (HFLM's
    max_length=16), which differ from the model's whole window on these reviews."""
    files = logged_run(tmp_path, capsys, "--model", str(tiny_llama), "--limit", "3",
                       "--max_length", "16")
    samples = [json.loads(line) for line in
               next(f for f in files if f.name.startswith("samples_")).read_text().splitlines()]
    args = [tuple(a.values()) for s in samples for a in s["arguments"].values()]
    logged = [float(r[0][0]) for s in samples for r in s["resps"]]
    cut = HFLM(pretrained=str(tiny_llama), max_length=16, batch_size=1, device="cpu")
    whole = HFLM(pretrained=str(tiny_llama), batch_size=1, device="cpu")
    want = [lp for lp, _ in cut.loglikelihood(requests("loglikelihood", args))]
    full = [lp for lp, _ in whole.loglikelihood(requests("loglikelihood", args))]
    assert logged == pytest.approx(want, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(want, full, strict=True)) > 1e-3


def test_an_encoder_decoder_directory_runs_as_lm_eval_spells_the_flags(
        tiny_llama: Path, tmp_path: Path, capsys) -> None:
    """`tunelab harness --model DIR` of a T5 (lm-eval's `--include_path` spelling): the model
    loads as seq2seq and the logged log-likelihoods are HFLM seq2seq's."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = encoder_decoder("t5", tokenizer).float()
    model.save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    tasks = write_tasks(tmp_path, until=(".",))
    out = tmp_path / "out"
    assert main(["harness", "--tasks", "tiny_mc", "--model", str(tmp_path / "t5"),
                 "--include_path", str(tasks), "--limit", "3", "--log_samples",
                 "--output_path", str(out)]) == 0
    printed = capsys.readouterr().out
    path = next(Path(line.removeprefix("wrote ")) for line in printed.splitlines()
                if line.startswith("wrote ") and "samples_tiny_mc_" in line)
    samples = [json.loads(line) for line in path.read_text().splitlines()]
    hf = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, backend="seq2seq")
    for sample in samples:
        args = [tuple(a.values()) for a in sample["arguments"].values()]
        want = hf.loglikelihood(requests("loglikelihood", args), disable_tqdm=True)
        assert [float(r[0][0]) for r in sample["resps"]] == pytest.approx(
            [lp for lp, _ in want], rel=1e-6)
    assert len(samples) == 3


def test_a_task_yaml_file_is_a_task_as_lm_eval_takes_it(tmp_path: Path) -> None:
    """--tasks PATH.yaml (lm-eval resolves a YAML path where no name matches): not refused."""
    path = write_tasks(tmp_path) / "tiny_mc.yaml"
    manager = task_manager([str(path)], None)
    assert "tiny_mc" not in manager.all_tasks  # known by its file alone
    assert list(manager.load([str(path)])["tasks"]) == ["tiny_mc"]
