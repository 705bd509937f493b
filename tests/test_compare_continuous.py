"""`tunelab compare` on a graded score (ROUGE): items ranked by the paired difference B - A,
the Wilcoxon signed-rank test and a bootstrap CI of the mean difference, `--pass` for
fixed/broken, `--export` of B's worst items only, and the task an eval dir remembers.

Expected numbers come from rouge-score and scipy directly, not from tunelab's own code.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from rouge_score import rouge_scorer
from scipy import stats

from tunelab.cli import main
from tunelab.config import (
    DataConfig,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    TaskConfig,
)
from tunelab.config.reading import to_dict
from tunelab.eval.metrics import metric_class, metric_names, task_metrics
from tunelab.eval.runner import EvalResult, write_result
from tunelab.report.run_page import comparison_page
from tunelab.runs import System
from tunelab.studies.error_analysis import compare_results, mcnemar_exact

REFERENCES = [
    "the council approved the new budget for schools",
    "heavy rain flooded the main road on monday",
    "the team won the final after extra time",
    "scientists found water ice near the lunar pole",
    "the museum reopened after a long renovation",
    "prices of fresh vegetables rose sharply this spring",
    "a local baker won the national bread prize",
    "the bridge will close for repairs in june",
    "students protested against higher tuition fees",
    "the airline cancelled flights because of the strike",
    "a new species of frog was found in the forest",
    "the mayor promised more buses for the suburbs",
]
A_PREDICTIONS = [
    "the council met on tuesday",                              # improves a lot
    "heavy rain flooded the main road on monday",              # worsens a lot (was exact)
    "the team won",                                            # improves a little
    "scientists found water ice near the lunar pole",          # unchanged (exact both)
    "a museum",                                                # improves
    "prices rose this spring",                                 # worsens a little
    "nothing to report",                                       # improves to exact
    "the bridge will close for repairs in june",               # worsens
    "students protested",                                      # unchanged
    "the airline cancelled some flights",                      # improves
    "a new species of frog was found in the forest",           # worsens
    "the mayor spoke",                                         # improves
]
B_PREDICTIONS = [
    "the council approved the new budget",
    "rain on monday",
    "the team won the final",
    "scientists found water ice near the lunar pole",
    "the museum reopened after renovation",
    "prices rose",
    "a local baker won the national bread prize",
    "a bridge closes",
    "students protested",
    "the airline cancelled flights because of the strike",
    "a frog",
    "the mayor promised more buses",
]
DOCUMENTS = [f"document {i}: " + ref + " , officials said on the day" for i, ref in
             enumerate(REFERENCES)]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure on tunelab's 0-100 scale, from rouge-score itself."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return 100 * scorer.score(reference, prediction)["rougeL"].fmeasure


A_SCORES = [rouge_l(p, r) for p, r in zip(A_PREDICTIONS, REFERENCES, strict=True)]
B_SCORES = [rouge_l(p, r) for p, r in zip(B_PREDICTIONS, REFERENCES, strict=True)]
DIFFERENCES = [b - a for a, b in zip(A_SCORES, B_SCORES, strict=True)]


def summary_task(metrics: tuple[str, ...] = ("rouge",), primary: str | None = "rougeL"
                 ) -> TaskConfig:
    return TaskConfig(name="news", output_type="generate",
                      data=DataConfig(source="unused.jsonl",
                                      fields={"input": "document", "output": "summary"}),
                      eval=EvalConfig(metrics=list(metrics), primary=primary))


def hand_result(task: TaskConfig, predictions: list[str], label: System) -> EvalResult:
    """An evaluation of `predictions` as the runner would write it, scored by the task's
    own metrics (no model)."""
    rows: list[dict] = [
        {"index": i, "origin": f"news-{i}", "input": DOCUMENTS[i], "reference": REFERENCES[i],
         "prediction": p} for i, p in enumerate(predictions)]
    items, scores = {}, {}
    for name, metric in task_metrics(task).items():
        items[name] = [metric.item(p, r) for p, r in zip(predictions, REFERENCES, strict=True)]
        scores.update(metric.aggregate(items[name]))
        for row, item in zip(rows, items[name], strict=True):
            row.setdefault("items", {})[name] = item
    return EvalResult(task=task.name, system=label, shots=0, n=len(rows), scores=scores, ci={},
                      signatures={}, mean_context_tokens=0.0, predictions=rows, items=items)


@pytest.fixture()
def pair() -> tuple[TaskConfig, EvalResult, EvalResult]:
    task = summary_task()
    return (task, hand_result(task, A_PREDICTIONS, System.base(0)),
            hand_result(task, B_PREDICTIONS, System.tuned()))


@pytest.fixture()
def dirs(tmp_path: Path, pair: tuple[TaskConfig, EvalResult, EvalResult]) -> tuple[Path, Path]:
    """A and B written as `tunelab eval --out` writes them, each recording its task."""
    task, a, b = pair
    write_result(a, tmp_path / "a", task)
    write_result(b, tmp_path / "b", task)
    return tmp_path / "a", tmp_path / "b"


def test_each_metric_says_whether_its_item_score_is_graded() -> None:
    graded = {name for name in metric_names() if metric_class(name).continuous_items}
    assert {"rouge", "bleu", "chrf", "f1", "perplexity"} <= graded
    assert graded.isdisjoint({"accuracy", "exact_match", "classification", "multiple_choice"})


def test_items_are_ranked_by_the_paired_difference(pair) -> None:
    task, a, b = pair
    report = compare_results(task, a, b, examples=3)
    assert [i.a_score for i in report.items] == pytest.approx(A_SCORES)
    assert [i.b_score for i in report.items] == pytest.approx(B_SCORES)
    by_gain = sorted(range(len(DIFFERENCES)), key=lambda i: -DIFFERENCES[i])
    assert [i.index for i in report.most_improved()] == by_gain[:3]
    assert [i.index for i in report.most_worsened()] == list(reversed(by_gain))[:3]
    assert [i.difference for i in report.most_improved()] == pytest.approx(
        sorted(DIFFERENCES, reverse=True)[:3])

    shift = report.shift
    assert shift is not None
    assert (shift.improved, shift.worsened, shift.unchanged) == (
        sum(d > 0 for d in DIFFERENCES), sum(d < 0 for d in DIFFERENCES),
        sum(d == 0 for d in DIFFERENCES)) == (6, 4, 2)
    mean = sum(DIFFERENCES) / len(DIFFERENCES)
    assert shift.mean_difference == pytest.approx(mean)
    assert shift.ci[0] < mean < shift.ci[1]
    assert shift.wilcoxon_p == pytest.approx(stats.wilcoxon(DIFFERENCES).pvalue)
    assert shift.a_mean == pytest.approx(a.scores["rougeL"])

    # no line was chosen: nothing is called fixed or broken
    assert report.judged == [] and report.pass_at is None
    headline = report.headline()
    assert "still wrong" not in headline and "McNemar" not in headline
    assert "Wilcoxon signed-rank" in headline and "no pass line (--pass X" in headline
    out = report.to_json()
    assert out["counts"] is None and out["mcnemar_p"] is None and out["a_right"] is None
    assert out["score_shift"]["improved"] == 6
    assert [r["index"] for r in out["most_worsened"]] == list(reversed(by_gain))[:3]
    table = report.table()
    assert "most improved (3 of 6" in table and "most worsened (3 of 4" in table
    assert "still wrong" not in table


def test_all_zero_differences_give_p_one(pair) -> None:
    task, a, _ = pair
    shift = compare_results(task, a, a).shift
    assert shift is not None
    assert (shift.wilcoxon_p, shift.mean_difference, shift.unchanged) == (1.0, 0.0, 12)


@pytest.mark.parametrize("line", [30.0, 60.0])
def test_a_pass_line_brings_back_fixed_and_broken(pair, line: float) -> None:
    task, a, b = pair
    report = compare_results(task, a, b, pass_at=line)
    expected = {"fixed": 0, "broken": 0, "still wrong": 0, "still right": 0}
    for sa, sb in zip(A_SCORES, B_SCORES, strict=True):
        expected[{(False, True): "fixed", (True, False): "broken", (False, False): "still wrong",
                  (True, True): "still right"}[(sa >= line, sb >= line)]] += 1
    assert report.counts() == expected
    assert report.p_value == pytest.approx(mcnemar_exact(expected["fixed"], expected["broken"]))
    assert f"rougeL >= {line:g} (--pass)" in report.headline()
    assert report.to_json()["counts"] == expected


def test_the_pass_line_decides_the_counts(pair) -> None:
    task, a, b = pair
    low, high = (compare_results(task, a, b, pass_at=x).counts() for x in (30.0, 60.0))
    assert low != high
    assert sum(low.values()) == sum(high.values()) == 12


def test_export_writes_bs_worst_items_only(dirs: tuple[Path, Path], tmp_path: Path,
                                           capsys) -> None:
    a_dir, b_dir = dirs
    worst_first = sorted(range(len(B_SCORES)), key=lambda i: B_SCORES[i])
    top = tmp_path / "top.jsonl"
    assert main(["compare", str(a_dir), str(b_dir), "--export", str(top), "--export-top",
                 "4"]) == 0
    rows = [json.loads(x) for x in top.read_text().splitlines()]
    assert [r["tunelab_origin"] for r in rows] == [f"news-{i}" for i in worst_first[:4]]
    assert [r["tunelab_score"] for r in rows] == pytest.approx(sorted(B_SCORES)[:4])
    assert rows[0]["summary"] == REFERENCES[worst_first[0]]  # the task's own columns
    assert rows[0]["document"] == DOCUMENTS[worst_first[0]]
    assert "wrote 4 of B's errors" in capsys.readouterr().err

    default = tmp_path / "default.jsonl"  # the worst quarter
    assert main(["compare", str(a_dir), str(b_dir), "--export", str(default)]) == 0
    assert len(default.read_text().splitlines()) == math.ceil(12 / 4) == 3

    below = tmp_path / "below.jsonl"  # with a line: B's items under it, as for labels
    assert main(["compare", str(a_dir), str(b_dir), "--pass", "60", "--export",
                 str(below)]) == 0
    exported = {json.loads(x)["tunelab_origin"] for x in below.read_text().splitlines()}
    assert exported == {f"news-{i}" for i, s in enumerate(B_SCORES) if s < 60}
    assert 3 < len(exported) < 12


def test_compare_json_and_html_show_the_ranking(dirs: tuple[Path, Path], pair, tmp_path: Path,
                                                capsys) -> None:
    a_dir, b_dir = dirs
    assert main(["compare", str(a_dir), str(b_dir), "--json", "--examples", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"] == "rougeL" and out["counts"] is None
    assert out["score_shift"]["wilcoxon_p"] == pytest.approx(stats.wilcoxon(DIFFERENCES).pvalue)
    assert len(out["most_improved"]) == 2
    task, a, b = pair
    page = tmp_path / "compare.html"
    comparison_page(compare_results(task, a, b), [a], [b]).render(page)
    html = page.read_text()
    assert "most worsened" in html and "Wilcoxon" in html and "exact McNemar" not in html


@pytest.mark.parametrize(("extra", "needle"), [
    (["--pass", "-1"], "--pass -1"),
    (["--pass", "nan"], "--pass nan"),
    (["--pass", "300"], "from 0 to 100"),
    (["--export-top", "0", "--export", "{tmp}/x.jsonl"], "--export-top 0"),
    (["--export-top", "3"], "add --export FILE"),
])
def test_bad_pass_and_export_top_are_one_line(dirs: tuple[Path, Path], tmp_path: Path, capsys,
                                               extra: list[str], needle: str) -> None:
    a_dir, b_dir = dirs
    argv = ["compare", str(a_dir), str(b_dir)] + [x.format(tmp=tmp_path) for x in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_pass_on_a_right_or_wrong_score_is_an_error(tmp_path: Path, capsys) -> None:
    task = summary_task(("exact_match",), None)
    write_result(hand_result(task, A_PREDICTIONS, System.base(0)), tmp_path / "a", task)
    write_result(hand_result(task, B_PREDICTIONS, System.tuned()), tmp_path / "b", task)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # a label score: transitions as always
    exact = [(p == r) for p, r in zip(B_PREDICTIONS, REFERENCES, strict=True)]
    assert out["counts"]["still right"] + out["counts"]["fixed"] == sum(exact)
    assert out["score_shift"] is None
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--pass", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already scores each item right or wrong" in err and "\n" not in err


def test_an_eval_dir_from_a_run_task_is_compared_without_task(tiny_llama: Path, tmp_path: Path,
                                                                capsys) -> None:
    """`tunelab eval --task RUN --out DIR` records the run's task (named after the run, no
    built-in task), so `tunelab compare` finds it without --task."""
    data = tmp_path / "news.jsonl"
    data.write_text("".join(json.dumps({"document": d, "summary": r}) + "\n"
                            for d, r in zip(DOCUMENTS, REFERENCES, strict=True)))
    config = RunConfig(name="summarise", output_dir=str(tmp_path / "runs"),
                       model=ModelConfig(name=str(tiny_llama)),
                       data=DataConfig(source=str(data),
                                       fields={"input": "document", "output": "summary"},
                                       template="format", prompt_format="{input}\nSummary:",
                                       completion_format=" {output}", test_size=4,
                                       validation_size=0),
                       method={"name": "lora", "r": 4},
                       eval=EvalConfig(metrics=["rouge"], primary="rougeL",
                                       generation=GenerationConfig(max_new_tokens=4)))
    run = tmp_path / "runs" / "summarise"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    for side in ("a", "b"):
        assert main(["eval", "--task", str(run), "--model", str(tiny_llama), "--out",
                     str(tmp_path / side)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tasks"] == ["summarise"] and out["key"] == "rougeL" and out["n"] == 4
    assert out["score_shift"]["unchanged"] == 4  # the same model twice

    # without the record, nothing says which task scored it
    forgetful = tmp_path / "forgetful"
    shutil.copytree(tmp_path / "a", forgetful)
    metrics = json.loads((forgetful / "metrics.json").read_text())
    assert metrics.pop("task_config")["name"] == "summarise"
    (forgetful / "metrics.json").write_text(json.dumps(metrics))
    assert main(["compare", str(forgetful), str(tmp_path / "b")]) == 0  # B remembers it
    capsys.readouterr()
    assert main(["compare", str(forgetful), str(forgetful)]) == 2
    assert "cannot tell which task scored it" in capsys.readouterr().err
