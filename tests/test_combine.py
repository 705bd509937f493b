"""`tunelab combine`: per-task LoRA runs of one base combined by peft's add_weighted_adapter.

The combined adapter must hold exactly the weights peft's own call gives (and differ from every
source), load in plain peft, and be an ordinary run directory (eval, compare, predict, export);
runs that cannot be combined are refused in one line, before anything loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llama
from helpers import DATA, tiny_run_config
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file
from test_bad_inputs import one_error_line
from transformers import AutoModelForCausalLM

import tunelab
from tunelab.cli import main
from tunelab.config import RunConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.runner import read_result
from tunelab.methods import get_method
from tunelab.runs import RunDir, System
from tunelab.workflows.combine import CombineResult

LORA = get_method("lora")


def people_config(tiny_llama: Path, out: Path, name: str, **train: object) -> RunConfig:
    """A second task: one-sentence opinions about films (tests/data/people.jsonl)."""
    config = tiny_run_config(tiny_llama, out, name, **train)
    return replace(config, data=replace(config.data, source=str(DATA / "people.jsonl"),
                                        test_size=4, validation_size=2,
                                        instruction="Is the opinion positive or negative?"))


@pytest.fixture(scope="module")
def sources(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA runs (r=4) on two tasks of the tiny model: `sent` scored its test split
    (combine reuses that evaluation), `people` did not (combine scores it)."""
    root = tmp_path_factory.mktemp("sources")
    sent = tunelab.train(tiny_run_config(tiny_llama, root, "sent", max_steps=4)).run_dir
    people = tunelab.train(people_config(tiny_llama, root, "people", max_steps=4, lr=3e-2,
                                         seed=3), evaluate_after=False).run_dir
    return {"sent": sent, "people": people}


@pytest.fixture(scope="module")
def linear(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> CombineResult:
    out = tmp_path_factory.mktemp("combined") / "linear"
    return tunelab.combine([sources["sent"], sources["people"]], "linear", out,
                           weights=[0.7, 0.5])


def peft_own_combination(tiny_llama: Path, sources: dict[str, Path], how: str,
                         weights: list[float], density: float | None) -> PeftModel:
    """peft's own call on the same two adapters: the reference the combined run must equal."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                      str(RunDir(sources["sent"]).weights(LORA)),
                                      adapter_name="first")
    model.load_adapter(str(RunDir(sources["people"]).weights(LORA)), adapter_name="second")
    torch.manual_seed(0)  # combine's --seed default, right before the call (DARE draws)
    model.add_weighted_adapter(["first", "second"], weights, "mine", combination_type=how,
                               density=density)
    model.set_adapter("mine")
    return model.eval()


@pytest.mark.parametrize(("how", "density"), [("linear", None), ("ties", 0.5),
                                              ("dare_ties", 0.5), ("cat", None)])
def test_combine_holds_peft_own_weights_and_loads_in_plain_peft(
        how: str, density: float | None, sources: dict[str, Path], tiny_llama: Path,
        tmp_path: Path) -> None:
    weights = [0.7, 0.5]
    result = tunelab.combine([sources["sent"], sources["people"]], how, tmp_path / how,
                             weights=weights, density=density, limit=2)
    saved_dir = RunDir(result.run_dir).weights(LORA)
    saved = load_file(str(saved_dir / "adapter_model.safetensors"))
    reference = peft_own_combination(tiny_llama, sources, how, weights, density)
    expected = get_peft_model_state_dict(reference, adapter_name="mine")
    assert sorted(saved) == sorted(expected) and saved
    for key, tensor in expected.items():
        assert torch.equal(saved[key], tensor), key
    # something was combined: B matrices are not zero, and no tensor is a source's own
    source_tensors = [load_file(str(RunDir(sources[name]).weights(LORA) /
                                    "adapter_model.safetensors")) for name in sources]
    assert all(saved[k].abs().sum() > 0 for k in saved if "lora_B" in k)
    assert not any(torch.equal(saved[k], s[k]) for s in source_tensors for k in saved
                   if k in s and s[k].shape == saved[k].shape)
    # plain peft loads the run's adapter and computes what peft's own combination computes
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                      str(saved_dir)).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[5, 17, 40, 99, 3, 12]])
    with torch.no_grad():
        logits = plain(input_ids=ids).logits
        assert torch.allclose(logits, reference(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(logits, base(input_ids=ids).logits, atol=1e-4)
    combined = result.summary["combined"]
    assert combined["how"] == how and combined["weights"] == weights
    assert combined["density"] == density
    assert combined["runs"] == [str(sources[n].resolve()) for n in ("sent", "people")]


def test_cat_combines_any_ranks(sources: dict[str, Path], tiny_llama: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    wide = tunelab.train(people_config(tiny_llama, tmp_path, "wide", max_steps=1,
                                       method={"name": "lora", "r": 8}),
                         evaluate_after=False).run_dir
    out = tmp_path / "cat"
    assert main(["combine", str(sources["sent"]), str(wide), "--how", "cat", "--limit", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "single-task run" in printed and f"run directory: {out}" in printed
    summary = json.loads(RunDir(out).summary.read_text())
    assert summary["combined"]["rank"] == 12  # 4 + 8
    counts = {s["name"]: s["parameters"] for s in summary["sizes"]}
    assert counts["combined (cat)"] == counts["sent"] + counts["wide"] > 0


def test_the_combined_run_is_an_ordinary_run(linear: CombineResult,
                                             sources: dict[str, Path], tmp_path: Path) -> None:
    run = RunDir(linear.run_dir)
    config = run.read_config()
    assert [t.name for t in config.tasks] == ["sent", "people"]
    assert config.method["r"] == 4 and config.method["alpha"] == 4  # peft: lora_alpha = r
    assert run.finished() and run.tokenizer.is_dir() and run.report_html.is_file()
    report = run.report_md.read_text()
    assert "Against each single-task run" in report and "combined (linear)" in report
    # its parameters: the same shapes as one r=4 source (linear keeps the rank)
    sent_summary = json.loads(RunDir(sources["sent"]).summary.read_text())
    assert linear.summary["trainable_parameters"] == sent_summary["trainable_parameters"] > 0
    # every task scored by the saved run equals what combine wrote (the in-memory adapter)
    for name in ("sent", "people"):
        written = read_result(run.eval_dir(System.tuned()).task(name))
        assert written.n > 0 and written.scores == linear.evaluations[name].scores
    again = tunelab.evaluate_task(str(run.root), adapter=run.root)  # its data section: sent
    assert [r["prediction"] for r in again.predictions] == [
        r["prediction"] for r in linear.evaluations["sent"].predictions]
    # paired against each source on its own items; `sent`'s stored evaluation is reused
    rows = {r.task: r for r in linear.report.rows}
    stored = read_result(RunDir(sources["sent"]).eval_dir(System.tuned()))
    assert rows["sent"].difference.before == stored.scores[rows["sent"].difference.key]
    assert rows["people"].n == linear.evaluations["people"].n
    # compare pairs it with a source run; predict takes one of its tasks; export checks it
    tunelab.compare(sources["sent"], run.eval_dir(System.tuned()).task("sent").root)
    inputs = tmp_path / "new.jsonl"
    inputs.write_text(json.dumps({"text": "I loved this film ."}) + "\n")
    with pytest.raises(TunelabError, match="pass --task with one of sent, people"):
        tunelab.predict(run.root, inputs)
    predicted = tunelab.predict(run.root, inputs, tmp_path / "out.jsonl", task="people")
    assert "prediction" in json.loads(predicted.read_text().splitlines()[0])
    check = tunelab.export(run.root, "hf", tmp_path / "export", limit=2)
    assert check.formats and check.formats[0].n == 2


def bad_run(kind: str, sources: dict[str, Path], tiny_llama: Path, root: Path) -> Path:
    """A run that cannot be combined with `sent`, made as cheaply as the case allows."""
    if kind in ("full", "ia3", "dora", "rslora"):
        method = {"full": {"name": "full"}, "ia3": {"name": "ia3"},
                  "dora": {"name": "lora", "r": 4, "dora": True},
                  "rslora": {"name": "lora", "r": 4, "rslora": True}}[kind]
        return tunelab.train(people_config(tiny_llama, root, kind, max_steps=1, lr=1e-4,
                                           method=method), evaluate_after=False).run_dir
    copy = root / kind
    shutil.copytree(sources["people"], copy)
    config = RunDir(copy).read_config()
    if kind == "base":
        other = build_tiny_llama(root / "other_model", seed=1)
        config = replace(config, name=kind, model=replace(config.model, name=str(other)))
    RunDir(copy).config_file.unlink()
    RunDir(copy).write_config(config)
    return copy


@pytest.mark.parametrize(("kind", "extra", "message"), [
    ("full", [], "method full makes no LoRA adapter"),
    ("ia3", [], "method ia3 makes no LoRA adapter"),
    ("dora", [], "method.dora: peft's add_weighted_adapter combines A and B only"),
    ("rslora", [], "method.rslora: peft's add_weighted_adapter scales"),
    ("base", [], "combine adapters of one base model"),
    ("wide", [], "--how linear: needs adapters of one rank"),
    ("same", [], "its task 'people' is also a task of"),
    ("one", [], "give at least two runs"),
    ("weights", ["--weights", "1,2,3"], "--weights: 3 numbers for 2 runs"),
    ("how", [], "--how svd: unknown; choose one of linear, ties, dare_ties, cat"),
    ("density", ["--density", "0.5"], "--density 0.5: --how linear keeps every entry"),
    ("full_out", [], "exists and is not empty"),
])
def test_what_cannot_be_combined_is_one_line(kind: str, extra: list[str], message: str,
                                             sources: dict[str, Path], tiny_llama: Path,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "combined"
    runs = [str(sources["sent"]), str(sources["people"])]
    how = "svd" if kind == "how" else "linear"
    if kind == "wide":
        wide = tunelab.train(people_config(tiny_llama, tmp_path, "wide", max_steps=1,
                                           method={"name": "lora", "r": 8}),
                             evaluate_after=False).run_dir
        runs = [runs[0], str(wide)]
    elif kind in ("full", "ia3", "dora", "rslora", "base"):
        runs = [runs[0], str(bad_run(kind, sources, tiny_llama, tmp_path))]
    elif kind == "same":
        runs = [runs[1], runs[1]]
    elif kind == "one":
        runs = runs[:1]
    elif kind == "full_out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    capsys.readouterr()  # the training above
    line = one_error_line(["combine", *runs, "--how", how, *extra, "--out", str(out)], capsys)
    assert message in line, line
    if kind == "full_out":
        assert (out / "keep.txt").read_text() == "mine"  # nothing written is lost
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".combined")]  # no staging


@pytest.mark.parametrize(("options", "faithful"), [({}, True), ({"use_rslora": True}, False),
                                                   ({"use_dora": True}, False)])
def test_peft_still_combines_rslora_and_dora_wrongly(options: dict[str, bool], faithful: bool,
                                                     tiny_llama: Path) -> None:
    """Why combine refuses rsLoRA and DoRA runs: adapter a at weight 1 and b at weight 0
    must compute what a alone computes. Plain LoRA does (exactly, by `cat`); under rsLoRA peft
    scales the result by sqrt(r), under DoRA it keeps a fresh magnitude vector. When peft
    fixes them this test fails: then the refusals in methods/lora.py can go."""
    torch.manual_seed(0)

    def config() -> LoraConfig:
        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                          init_lora_weights=False, **options)

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), config(),
                           adapter_name="first")
    model.add_adapter("second", config())
    model.add_weighted_adapter(["first", "second"], [1.0, 0.0], "mine", combination_type="cat")
    model.eval()
    ids = torch.tensor([[5, 17, 40, 99, 3, 12]])
    with torch.no_grad():
        model.set_adapter("first")
        alone = model(input_ids=ids).logits
        model.set_adapter("mine")
        combined = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(alone, base, atol=1e-3)  # the adapter does something
    assert torch.allclose(combined, alone, atol=1e-5) is faithful
