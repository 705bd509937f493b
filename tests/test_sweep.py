"""`tunelab sweep`, `tunelab merge` and several adapters in one `tunelab eval`, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import DATA, tiny_run_config
from transformers import AutoModelForCausalLM

import tunelab
import tunelab.models as models
import tunelab.workflows.sweep as sweep_module
from tunelab.cli import main
from tunelab.config import to_dict


def _config_file(tiny_llama: Path, tmp_path: Path, **train) -> Path:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", name="demo", **train)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    return path


def test_sweep_one_table_every_method_same_budget(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    retention_task = tmp_path / "reviews_lm.yaml"
    retention_task.write_text(yaml.safe_dump({
        "name": "reviews_lm", "output_type": "loglikelihood_rolling",
        "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                 "validation_size": 0, "test_size": 6, "split_seed": 0},
        "target": "text", "eval": {"metrics": ["bits_per_byte"]}}))
    config = _config_file(tiny_llama, tmp_path)
    code = main(["sweep", str(config), "--methods", "lora,bitfit,prompt", "--steps", "3",
                 "--lr", "bitfit=5e-3", "--retention", str(retention_task)])
    assert code == 0, capsys.readouterr().err
    sweep_dir = tmp_path / "runs" / "demo-sweep"
    saved = json.loads((sweep_dir / "sweep.json").read_text())
    rows = {r["method"]: r for r in saved["rows"]}
    assert list(rows) == ["lora", "bitfit", "prompt"] and all(r["ok"] for r in rows.values())
    assert rows["bitfit"]["lr"] == 5e-3 and rows["lora"]["lr"] == 4e-4
    for method, row in rows.items():
        summary = json.loads((sweep_dir / method / "summary.json").read_text())
        assert row["steps"] == summary["steps"] == 3  # the same budget for every method
        assert row["trainable_parameters"] == summary["trainable_parameters"] > 0
        kept = json.loads((sweep_dir / method / "retention.json").read_text())
        assert row["retention"]["reviews_lm"] == pytest.approx(kept["rows"][0]["delta"])
        assert "score" in row and row["metric"] == "accuracy"
    # Every method starts from the same base: one cached "before" score for all of them.
    befores = {json.loads((sweep_dir / m / "retention.json").read_text())["rows"][0]["before"]
               for m in rows}
    assert len(befores) == 1
    table = (sweep_dir / "sweep.md").read_text()
    assert "Δ reviews_lm" in table and table.count("\n") == 2 + 3
    assert (sweep_dir / "score_vs_params.png").stat().st_size > 1000
    page = (sweep_dir / "report.html").read_text()  # the sweep's page, written by the sweep
    assert page.count('<img src="data:image/png;base64,') == 3
    assert all(f"<td>{m}</td>" in page for m in rows)
    assert rows["prompt"]["trainable_parameters"] < rows["lora"]["trainable_parameters"]
    run_page = (sweep_dir / "lora" / "report.html").read_text()  # a run without baselines
    assert "<h2>Test scores</h2>" in run_page and "Baselines vs" not in run_page
    assert "best baseline" not in run_page

    # An existing sweep is never overwritten; --resume keeps finished methods, runs the rest.
    assert main(["sweep", str(config), "--methods", "lora"]) == 2
    assert "add --resume" in capsys.readouterr().err
    stamp = (sweep_dir / "lora" / "summary.json").stat().st_mtime_ns
    (sweep_dir / "freeze").mkdir()  # an unfinished run: set aside, not deleted
    code = main(["sweep", str(config), "--methods", "lora,freeze", "--steps", "3", "--resume",
                 "--retention", str(retention_task)])
    assert code == 0
    assert (sweep_dir / "lora" / "summary.json").stat().st_mtime_ns == stamp
    assert (sweep_dir / "freeze.unfinished-1").is_dir()
    resumed = {r["method"]: r for r in json.loads((sweep_dir / "sweep.json").read_text())["rows"]}
    assert resumed["lora"] == rows["lora"] and resumed["freeze"]["ok"]
    frozen = yaml.safe_load((sweep_dir / "freeze.yaml").read_text())["method"]
    assert frozen == {"name": "freeze", "layers": ["top:4"]}  # the sweep's default for freeze


def test_sweep_rejects_unknown_methods_and_bad_lr(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    config = _config_file(tiny_llama, tmp_path)
    assert main(["sweep", str(config), "--methods", "lora,qlora9"]) == 2
    assert "--methods: unknown qlora9" in capsys.readouterr().err
    assert main(["sweep", str(config), "--lr", "lora"]) == 2
    assert "--lr lora: expected METHOD=NUMBER" in capsys.readouterr().err
    for bad, said in ((["--lr", "lora=-1"], "--lr lora=-1: must be a number >= 0"),
                      (["--lr", "lora=nan"], "--lr lora=nan: must be a number >= 0"),
                      (["--lr", "ia3=1e-3"], "--lr ia3=0.001: ia3 is not in --methods"),
                      (["--steps", "-2"], "--steps/--seconds: must be 0")):
        assert main(["sweep", str(config), "--methods", "lora", *bad]) == 2
        assert said in capsys.readouterr().err
    # A config error is found for every method before any trains: one line, nothing written.
    assert main(["sweep", str(config), "data.source=missing.jsonl", "--methods", "lora"]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    # A method's own options are checked before the first method trains.
    assert main(["sweep", str(config), "method.rank=4", "--methods", "bitfit,lora"]) == 2
    assert "method (lora): unknown option 'rank'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # test items that are also training items: found before any method trains
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text((DATA / "reviews.jsonl").read_text() * 2)
    assert main(["sweep", str(config), f"data.source={leaked}", "--methods", "lora,ia3"]) == 2
    assert "test items are also in the training data" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_resumed_sweep_keeps_finished_methods_without_reading_their_data_again(
        tiny_llama: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "reviews.jsonl"
    data.write_text((DATA / "reviews.jsonl").read_text())
    config = _config_file(tiny_llama, tmp_path)
    assert main(["sweep", str(config), f"data.source={data}", "--methods", "lora",
                 "--steps", "1"]) == 0
    data.unlink()  # nothing is left to train, so nothing needs the data
    assert main(["sweep", str(config), f"data.source={data}", "--methods", "lora", "--steps",
                 "1", "--resume"]) == 0
    assert "lora finished before, kept" in capsys.readouterr().out


def test_sweep_turns_packing_off_for_prompt_tuning_and_reports_failures(
        tiny_llama: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """data.packing: true in the config: prompt tuning trains padded (said under the table);
    a method whose training fails keeps its row, its reason is printed and the sweep exits 1."""
    config = tiny_run_config(tiny_llama, tmp_path / "runs", name="demo")
    config.data.packing = True
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    real_run = sweep_module._run

    def bitfit_fails(argv: list[str], log: Path) -> bool:
        if log.stem != "bitfit":
            return real_run(argv, log)
        log.write_text("Traceback (most recent call last):\n  ...\n"
                       "tunelab: error: out of memory at step 2 (simulated)\n")
        return False
    monkeypatch.setattr(sweep_module, "_run", bitfit_fails)
    code = main(["sweep", str(path), "--methods", "lora,prompt,bitfit", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 1
    sweep_dir = tmp_path / "runs" / "demo-sweep"
    rows = {r["method"]: r for r in json.loads((sweep_dir / "sweep.json").read_text())["rows"]}
    assert rows["lora"]["ok"] and rows["prompt"]["ok"] and not rows["bitfit"]["ok"]
    assert rows["prompt"]["steps"] == 2 and "notes" not in rows["lora"]
    trained = yaml.safe_load((sweep_dir / "prompt.yaml").read_text())["data"]
    assert trained["packing"] is False  # for prompt alone
    assert yaml.safe_load((sweep_dir / "lora.yaml").read_text())["data"]["packing"] is True
    assert "prompt: data.packing off" in out and rows["prompt"]["notes"]
    failed = "bitfit: failed: tunelab: error: out of memory at step 2 (simulated)"
    assert failed in out and failed in (sweep_dir / "sweep.md").read_text()
    assert rows["bitfit"]["reason"] == failed.split("failed: ", 1)[1]
    assert failed in (sweep_dir / "report.html").read_text()


def test_merge_writes_a_plain_model_with_the_same_logits(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", max_steps=3, lr=5e-2)
    run = tunelab.train(config, evaluate_after=False).run_dir
    out = tmp_path / "merged"
    assert main(["merge", str(run), "--out", str(out)]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    unmerged = tunelab.runs.run_dir.load_run_model(run).model.eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, unmerged(ids).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(merged(ids).logits, AutoModelForCausalLM.from_pretrained(
            tiny_llama)(ids).logits)  # the training is in the merged weights
    assert tunelab.runs.run_dir.scoring_run_model(run).model is not None
    # An existing, non-empty directory is never overwritten.
    assert main(["merge", str(run), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_eval_several_adapters_on_one_base(tiny_llama: Path, tmp_path: Path, capsys,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    runs = []
    for name, lr in (("a", 5e-2), ("b", 1e-2)):
        config = tiny_run_config(tiny_llama, tmp_path / "runs", name=name, max_steps=3, lr=lr)
        runs.append(str(tunelab.train(config, evaluate_after=False).run_dir))
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({
        "name": "reviews", "output_type": "generate",
        "data": {"source": str(DATA / "reviews.jsonl"), "fields": {"input": "text", "output": "label"},
                 "instruction": "Classify the sentiment.", "template": "chat",
                 "validation_size": 4, "test_size": 8},
        "eval": {"metrics": ["classification", "perplexity"], "labels": ["positive", "negative"],
                 "generation": {"max_new_tokens": 4}}}))

    loads = []
    real = models.load_model
    monkeypatch.setattr("tunelab.runs.adapter_set.load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    capsys.readouterr()
    code = main(["eval", "--task", str(task), "--adapter", runs[0], "--adapter", runs[1],
                 "--json", "--out", str(tmp_path / "out")])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in results] == ["base 0-shot", "a 0-shot", "b 0-shot"]
    assert loads == [1]  # the base is loaded once for all three systems
    for run, result in zip(runs, results[1:], strict=True):
        alone = tunelab.evaluate_task(str(task), adapter=run)
        assert result["scores"]["perplexity"] == pytest.approx(alone.scores["perplexity"], rel=1e-5)
        assert result["scores"]["accuracy"] == pytest.approx(alone.scores["accuracy"])
    base = tunelab.evaluate_task(str(task), model=str(tiny_llama))
    assert results[0]["scores"]["perplexity"] == pytest.approx(base.scores["perplexity"], rel=1e-5)
    # Each adapter was applied: its perplexity is not the base model's.
    for result in results[1:]:
        assert result["scores"]["perplexity"] != pytest.approx(base.scores["perplexity"], rel=1e-3)
    assert (tmp_path / "out" / "a" / "metrics.json").is_file()
    # A full fine-tune beside an adapter (no adapter of its own to share the base): each run
    # is loaded alone and scored as it is alone.
    full = tiny_run_config(tiny_llama, tmp_path / "runs", name="full", max_steps=3, lr=1e-3,
                           method={"name": "full"})
    runs.append(str(tunelab.train(full, evaluate_after=False).run_dir))
    capsys.readouterr()
    code = main(["eval", "--task", str(task), "--adapter", runs[0], "--adapter", runs[2],
                 "--json"])
    assert code == 0, capsys.readouterr().err
    mixed = json.loads(capsys.readouterr().out)
    assert [r["system"] for r in mixed] == ["base 0-shot", "a 0-shot", "full 0-shot"]
    assert mixed[1]["scores"]["perplexity"] == pytest.approx(results[1]["scores"]["perplexity"],
                                                             rel=1e-5)
    assert mixed[0]["scores"]["perplexity"] == pytest.approx(base.scores["perplexity"], rel=1e-5)
    alone = tunelab.evaluate_task(str(task), adapter=runs[2])
    assert mixed[2]["scores"]["perplexity"] == pytest.approx(alone.scores["perplexity"], rel=1e-5)
    assert mixed[2]["scores"]["perplexity"] != pytest.approx(base.scores["perplexity"], rel=1e-3)
