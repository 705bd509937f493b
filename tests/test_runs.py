"""runs/: a run directory's paths and rules (RunDir), a scored system's identity (System), and
run directories written before either existed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import DATA

import tunelab
from tunelab.cli import main
from tunelab.eval.runner import read_result
from tunelab.runs import EvalDir, RunDir, StudyFiles, System
from tunelab.runs.system import from_label

OLD_RUN = DATA / "old_run"


@pytest.mark.parametrize(("system", "label", "slug"), [
    (System.base(), "base 0-shot", "base-0-shot"),
    (System.base(4), "base 4-shot", "base-4-shot"),
    (System.tuned(), "fine-tuned", "fine-tuned"),
    (System.tuned("qs"), "fine-tuned (qs)", "fine-tuned--qs"),
    (System.tuned("qs", 2), "fine-tuned (qs) 2-shot", "fine-tuned--qs--2-shot"),
    (System.named_adapter("sentiment", 0), "sentiment 0-shot", "sentiment-0-shot"),
])
def test_a_system_derives_its_label_and_directory(system: System, label: str, slug: str) -> None:
    assert system.label == label == str(system) and system.slug == slug
    assert System.from_json(system.to_json(), "ignored") == system
    assert from_label(label) == system or system.adapter is not None  # adapters: stored ids


def test_labels_written_before_identities_were_stored_read_back() -> None:
    assert from_label("base 3-shot") == System.base(3)
    assert from_label("fine-tuned") == System.tuned()
    assert from_label("fine-tuned (runA)") == System.tuned("runA")
    assert from_label("runA 2-shot") == System.tuned("runA", 2)  # `tunelab eval --adapter runA`
    assert from_label("base") == System.base()  # the retention cache's base scores
    assert System.from_json(None, "base 0-shot").is_base


def test_a_run_s_own_fine_tune_is_the_same_run_named() -> None:
    own, named = System.tuned(), System.tuned("runA")
    assert own != named and own.named("runA") == named and own.named("runB") != named
    assert System.base().named("runA") == System.base()
    assert named.named("runB") == named  # already named: stays itself


def test_run_dir_paths(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    assert run.eval_dir(System.base(4)).root == tmp_path / "r" / "eval" / "base-4-shot"
    assert run.robustness.json == tmp_path / "r" / "robustness" / "robustness.json"
    assert run.bias.markdown == tmp_path / "r" / "bias.md"
    study = StudyFiles(tmp_path / "rob", "robustness")
    assert study.evaluation(System.tuned("x"), "typo@0.1").root == \
        tmp_path / "rob" / "fine-tuned--x" / "typo-0.1"
    assert not run.is_run() and not run.has_checkpoint() and not run.finished()


def test_study_markdown_tables_are_blocks_of_their_own(tmp_path: Path) -> None:
    study = StudyFiles(tmp_path, "bias")
    study.write({}, "# Bias\n\ncaption\n| a |\n|---|\n| 1 |\nbelow\n\nnext\n| b |\n")
    assert study.markdown.read_text() == (
        "# Bias\n\ncaption\n\n| a |\n|---|\n| 1 |\n\nbelow\n\nnext\n\n| b |\n")


def old_run(tmp_path: Path, tiny_llama: Path) -> Path:
    """The run directory an earlier tunelab wrote (train, eval --out eval/base-0-shot,
    robustness --adapter RUN --out RUN/robustness), its paths pointed at this machine."""
    run = tmp_path / "runs" / "old"
    shutil.copytree(OLD_RUN, run)
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".jsonl", ".md"):
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("{DATA_DIR}", str(DATA)).replace(
                "{MODEL}", str(tiny_llama)).replace("{OUT}", str(tmp_path / "runs")),
                encoding="utf-8")
    return run


def test_a_run_directory_from_before_opens_in_report_and_compare(
        tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = old_run(tmp_path, tiny_llama)
    assert "system_id" not in (run / "eval" / "fine-tuned" / "metrics.json").read_text()
    assert read_result(EvalDir(run / "eval" / "fine-tuned")).system == System.tuned()
    assert read_result(EvalDir(run / "eval" / "base-0-shot")).system == System.base(0)

    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Baselines vs fine-tuned" in html and "base 0-shot" in html
    assert "Robustness" in html

    capsys.readouterr()
    assert main(["compare", str(run / "eval" / "base-0-shot"), str(run),
                 "--robustness", str(run / "robustness")]) == 0
    out = capsys.readouterr().out
    assert "base 0-shot -> fine-tuned" in out and "(8 items" in out
    assert "inconsistent" in out
    # the robustness run named the fine-tune after its run ("fine-tuned (old)"): its per-item
    # consistency is still found for the run's own fine-tune (side B)
    report = tunelab.compare(run / "eval" / "base-0-shot", run,
                                  robustness=run / "robustness")
    flagged = {i.key for i in report.items if "inconsistent" in i.b_errors}
    assert flagged == {f"{DATA / 'reviews.jsonl'}:16"}
