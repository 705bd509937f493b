"""`tunelab compare`: error analysis between two evaluations of the same items.

The transitions, McNemar p-values and category counts are recomputed here from the written
predictions (and scipy), and every error category is shown to fire on a prediction that has
the error and stay quiet on one that does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import REVIEWS
from scipy.stats import binomtest

from tunelab.cli import main
from tunelab.config import DataConfig, EvalConfig, GenerationConfig, ModelConfig, TaskConfig
from tunelab.core.labels import normalize_label
from tunelab.data import load_splits
from tunelab.data.transforms.perturbations import parse_perturbations
from tunelab.eval.compare import item_scores
from tunelab.eval.datasets import load_task_data
from tunelab.eval.datasets.bbq import bbq_items, bbq_task
from tunelab.eval.output_types import Framing
from tunelab.eval.runner import evaluate_records, read_result, write_result
from tunelab.models import load_model
from tunelab.runs import System
from tunelab.studies.error_analysis import compare_results, mcnemar_exact
from tunelab.studies.error_categories import (
    CATEGORIES,
    ItemView,
    TaskContext,
    longest_common_run,
)
from tunelab.studies.robustness import run_robustness

LABELS = ["positive", "negative"]
BY_NAME = {c.name: c for c in CATEGORIES}
OPEN = TaskContext(free_text=True)
LABELLED = TaskContext(free_text=True, labels=("positive", "negative"))


def _task(name: str = "reviews", data: DataConfig = REVIEWS, metrics: tuple[str, ...] = (
        "classification",), tokens: int = 3) -> TaskConfig:
    return TaskConfig(name=name, data=data, output_type="generate",
                      eval=EvalConfig(metrics=list(metrics), labels=LABELS,
                                      generation=GenerationConfig(max_new_tokens=tokens,
                                                                  batch_size=8)))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 6), (6, 1), (7, 9), (3, 3), (0, 12), (25, 40)])
def test_mcnemar_exact_is_the_two_sided_binomial_test(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    if (b, c) == (1, 6):
        assert mcnemar_exact(b, c) == pytest.approx(2 * (1 + 7) / 2 ** 7)  # 0.125 by hand


@pytest.mark.parametrize(("name", "context", "bad", "good"), [
    ("empty", OPEN, ItemView("  ", "a cat", "x"), ItemView("a dog", "a cat", "x")),
    ("invalid_label", LABELLED, ItemView("maybe", "positive", "x"),
     ItemView(" Positive.", "positive", "x")),
    ("too_long", OPEN, ItemView("yes", "positive", "x", hit_limit=True),
     ItemView("a short answer of five", "an answer of the same size", "x")),
    ("too_long", OPEN, ItemView(" ".join(["word"] * 13), "positive", "x"),
     ItemView(" ".join(["word"] * 12), "positive", "x")),
    ("repetition", OPEN, ItemView("the film the film the film is", "r", "x"),
     ItemView("the film is good and the film is long", "r", "x")),
    ("repetition", OPEN, ItemView("very very very good", "r", "x"),
     ItemView("very very good", "r", "x")),
    ("copied_prompt", OPEN,
     ItemView("the plot was tedious and the jokes fell flat", "negative",
              "she thought the plot was tedious and the jokes fell flat ."),
     ItemView("the plot was tedious", "the plot was tedious",  # an extractive answer
              "she thought the plot was tedious and the jokes fell flat .")),
    ("misspelled", OPEN, ItemView("the movei was realy good", "r", "x"),
     ItemView("the movie was really good, said Zorblax", "r", "Zorblax reviewed it")),
    ("inconsistent", TaskContext(free_text=False, consistency=True),
     ItemView("positive", "positive", "x", changed_under_noise=True),
     ItemView("positive", "positive", "x", changed_under_noise=False)),
    ("unsupported_content", OPEN,
     ItemView("The film won 3 awards. It stars Tom Hanks.", "the film won awards",
              "a film that won awards ."),
     ItemView("The film won 3 awards. It stars Tom Hanks.", "r",
              "a film with tom hanks that won 3 awards .")),
])
def test_each_error_category_fires_on_its_error_only(name: str, context: TaskContext,
                                                     bad: ItemView, good: ItemView) -> None:
    category = BY_NAME[name]
    assert category.applies(context)
    assert category.detect(bad, context) and not category.detect(good, context)


def test_which_categories_apply_is_each_categorys_own_decision() -> None:
    chosen = TaskContext(free_text=False, labels=("a", "b"))
    assert [c.name for c in CATEGORIES if c.applies(chosen)] == []
    assert "invalid_label" in [c.name for c in CATEGORIES if c.applies(LABELLED)]
    assert "unsupported_content" not in [c.name for c in CATEGORIES if c.applies(LABELLED)]
    assert "inconsistent" not in [c.name for c in CATEGORIES if c.applies(OPEN)]
    assert longest_common_run("a b c d e".split(), "x b c d y".split()) == ["b", "c", "d"]


def test_written_evaluations_read_back_with_the_same_item_scores(tiny_llama: Path,
                                                                 tmp_path: Path) -> None:
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    task = _task(metrics=("classification", "rouge", "bleu"))
    data = load_task_data(task)
    result = evaluate_records(lm, task, data.split("test"), 0, (), System.base(), Framing.of(task, data))
    write_result(result, tmp_path / "gen")
    back = read_result(tmp_path / "gen")
    assert back.system == System.base() and back.n == result.n and back.scores == result.scores
    for key in ("accuracy", "rougeL", "bleu"):
        assert item_scores(task, back, key).values == item_scores(task, result, key).values
    assert all("hit_max_new_tokens" in row for row in back.predictions)

    bbq = bbq_task()
    items = bbq_items(["age"], root=Path(__file__).parent / "data" / "bbq")
    chosen = evaluate_records(lm, bbq, [i.record for i in items], 0, (), System.base())
    write_result(chosen, tmp_path / "mc")
    assert item_scores(bbq, read_result(tmp_path / "mc")).values == \
        item_scores(bbq, chosen).values
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "metrics.json").write_text((tmp_path / "gen" / "metrics.json").read_text())
    lines = (tmp_path / "gen" / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "cut" / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(Exception, match="3 rows for n=8 items; the evaluation was cut short"):
        read_result(tmp_path / "cut")


def test_compare_end_to_end_numbers_recomputed_from_the_predictions(
        tiny_llama: Path, tmp_path: Path, capsys) -> None:
    task = _task(tokens=12)
    report = run_robustness(task, parse_perturbations("typo"), model=str(tiny_llama),
                            baselines=["zero", "2"], severities=[0.3], out_dir=tmp_path / "rob")
    assert report.systems == ["base 0-shot", "base 2-shot"]
    # the untrained tiny model's answers don't react to noise; mark three items as if they
    # did, in the file's own format, to check the join
    flags = tmp_path / "rob" / "base-0-shot" / "consistency.jsonl"
    marked = [dict(json.loads(x), changed=json.loads(x)["index"] in (0, 2, 5))
              for x in flags.read_text().splitlines()]
    flags.write_text("".join(json.dumps(m) + "\n" for m in marked))
    a_dir, b_dir = tmp_path / "rob" / "base-0-shot" / "clean", tmp_path / "rob" / "base-2-shot" / "clean"
    task_file = tmp_path / "reviews.yaml"
    task_file.write_text(json.dumps({
        "name": "reviews", "output_type": "generate",
        "data": {"source": REVIEWS.source, "fields": REVIEWS.fields, "template": "format",
                 "prompt_format": REVIEWS.prompt_format, "completion_format": " {output}",
                 "test_size": 8, "validation_size": 0},
        "eval": {"metrics": ["classification"], "labels": LABELS,
                 "generation": {"max_new_tokens": 12}}}))
    export = tmp_path / "errors.jsonl"
    assert main(["compare", str(a_dir), str(b_dir), "--task", str(task_file), "--robustness",
                 str(tmp_path / "rob"), "--export", str(export), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)

    a_rows = [json.loads(x) for x in (a_dir / "predictions.jsonl").read_text().splitlines()]
    b_rows = {r["origin"]: r for r in map(json.loads,
                                          (b_dir / "predictions.jsonl").read_text().splitlines())}

    def right(row: dict) -> bool:
        return normalize_label(row["prediction"]) == normalize_label(row["reference"])

    expected = {"fixed": 0, "broken": 0, "still wrong": 0, "still right": 0}
    for row in a_rows:
        ra, rb = right(row), right(b_rows[row["origin"]])
        expected[{(False, True): "fixed", (True, False): "broken", (False, False): "still wrong",
                  (True, True): "still right"}[(ra, rb)]] += 1
    assert out["counts"] == expected and out["n"] == 8
    assert out["mcnemar_p"] == pytest.approx(mcnemar_exact(expected["fixed"], expected["broken"]))
    # the untrained tiny model answers with noise: invalid labels among its errors
    categories = {c["category"]: c for c in out["categories"]}
    invalid_a = sum(normalize_label(r["prediction"]) not in LABELS for r in a_rows)
    assert categories["invalid_label"]["a_all"] == invalid_a > 0
    # inconsistent = the robustness run's changed flags, among A's wrong items
    changed = {json.loads(x)["key"]: json.loads(x)["changed"] for x in
               (tmp_path / "rob" / "base-0-shot" / "consistency.jsonl").read_text().splitlines()}
    assert categories["inconsistent"]["a_errors"] == sum(
        changed[r["origin"]] for r in a_rows if not right(r))
    assert any(changed.values())
    # export: B's errors, in the task data's own columns, readable as training data
    exported = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(exported) == expected["still wrong"] + expected["broken"] > 0
    assert all(set(e) >= {"text", "label", "tunelab_transition", "tunelab_prediction"}
               for e in exported)
    reread = load_splits(DataConfig(source=str(export), fields={"input": "text",
                                                                "output": "label"},
                                    test_size=0, validation_size=0))
    assert sorted(r.output for r in reread.train) == sorted(e["label"] for e in exported)
    assert {r.input for r in reread.train} <= {r["input"] for r in a_rows}
    # the table names every group and the slices
    assert main(["compare", str(a_dir), str(b_dir), "--task", str(task_file)]) == 0
    table = capsys.readouterr().out
    assert "exact McNemar" in table and "label" in table and "input length" in table

    # one-line errors, exit 2: an existing export, a missing dir, different items, tasks
    for argv, needle in [
        (["compare", str(a_dir), str(b_dir), "--task", str(task_file), "--export", str(export)],
         "exists; choose a new file"),
        (["compare", str(a_dir), str(tmp_path / "nope")], "no such directory"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    fewer = tmp_path / "fewer"
    result = read_result(b_dir)
    result.predictions, result.n = result.predictions[:5], 5
    result.items = {k: v[:5] for k, v in result.items.items()}
    write_result(result, fewer)
    assert main(["compare", str(a_dir), str(fewer), "--task", str(task_file)]) == 2
    assert "A and B scored different items (3 only in A" in capsys.readouterr().err
    other = read_result(b_dir)
    other.task = "news"
    write_result(other, tmp_path / "other")
    assert main(["compare", str(a_dir), str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "scored reviews but B" in err and "news" in err


def test_compare_results_of_a_run_and_its_base(tiny_llama: Path, tmp_path: Path) -> None:
    """The quickstart's comparison: base 0-shot vs fine-tuned on one task, in memory."""
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    task = _task()
    data = load_task_data(task)
    records = data.split("test")
    a = evaluate_records(lm, task, records, 0, (), System.base(0), Framing.of(task, data))
    b = evaluate_records(lm, task, records, 2, data.split("train"), System.base(2),
                         Framing.of(task, data))
    report = compare_results(task, a, b)
    right_a, right_b = item_scores(task, a).right(), item_scores(task, b).right()
    assert report.counts()["fixed"] == sum(not x and y for x, y in zip(right_a, right_b,
                                                                       strict=True))
    assert report.a_right == pytest.approx(a.scores["accuracy"])
    assert report.short_table().startswith("base 0-shot -> base 2-shot on reviews (8 items")


def test_compare_two_runs_of_one_config(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    """Two runs of one config (their tasks are named after the runs) pair by their items; the
    task, its labels and metric come from the runs' config."""
    from helpers import tiny_run_config

    import tunelab

    runs = [tunelab.train(tiny_run_config(tiny_llama, tmp_path, name=name, max_steps=2,
                                          eval_every=0, lr=lr)).run_dir
            for name, lr in (("first", 1e-2), ("second", 5e-2))]
    capsys.readouterr()
    assert main(["compare", str(runs[0]), str(runs[1]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["a"], out["b"]) == ("fine-tuned (first)", "fine-tuned (second)")
    assert out["n"] == 8 and sum(out["counts"].values()) == 8
    assert "invalid_label" in {c["category"] for c in out["categories"]}
