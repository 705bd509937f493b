"""Human ratings: the SQLite store (resume, replace, CSV round trip, kill -9 of a writer) and
the statistics against reference implementations and published values."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from tunelab.core.errors import TunelabError
from tunelab.human import (
    RatingStore,
    bradley_terry,
    krippendorff_alpha,
    mean_ci,
    paired_ratings,
    rank_correlations,
    weighted_kappa,
)
from tunelab.runs import System

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 coders x 12 units
# example with missing values; the paper gives nominal alpha = 0.743.
PAPER = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def _by_rater(table: dict[str, list]) -> dict[str, dict[str, float]]:
    return {r: {f"u{i}": v for i, v in enumerate(values) if v is not None}
            for r, values in table.items()}


def test_krippendorff_alpha_matches_the_paper() -> None:
    assert krippendorff_alpha(_by_rater(PAPER), "nominal") == pytest.approx(0.743, abs=5e-4)
    ordinal = krippendorff_alpha(_by_rater(PAPER))
    interval = krippendorff_alpha(_by_rater(PAPER), "interval")
    assert 0.743 < ordinal < 1 and interval == pytest.approx(0.849, abs=5e-4)
    same = {"a": {"x": 3, "y": 3}, "b": {"x": 3, "y": 3}}
    assert krippendorff_alpha(same) == 1.0
    assert math.isnan(krippendorff_alpha({"a": {"x": 1}, "b": {"y": 2}}))


@pytest.mark.parametrize("quadratic", [True, False])
def test_weighted_kappa_matches_sklearn(quadratic: bool) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(1, 6, 40)
    b = np.clip(a + rng.integers(-1, 2, 40), 1, 5)
    ours = weighted_kappa(list(a), list(b), [1, 2, 3, 4, 5], quadratic=quadratic)
    theirs = cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5],
                               weights="quadratic" if quadratic else "linear")
    assert ours == pytest.approx(theirs, abs=1e-12) and 0 < ours < 1


def test_paired_ratings_bootstrap_and_wilcoxon() -> None:
    a = [3, 2, 4, 3, 2, 3, 1, 2, 3, 4, 2, 3]
    b = [4, 3, 4, 5, 3, 4, 2, 2, 4, 5, 3, 4]
    paired = paired_ratings(a, b)
    assert paired.delta == pytest.approx(11 / 12)  # differences 1,1,0,2,1,1,1,0,1,1,1,1
    assert paired.ci[0] <= paired.delta <= paired.ci[1] and paired.ci[0] > 0
    assert paired.wilcoxon_p == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert paired.bootstrap_p < 0.01
    assert paired_ratings(a, a).wilcoxon_p == 1.0 and paired_ratings(a, a).delta == 0
    mean, low, high = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3 and low < 3 < high


def test_bradley_terry_recovers_the_win_ratio() -> None:
    three_of_four = [("A", "B", -1)] * 3 + [("A", "B", 1)]
    s = bradley_terry(three_of_four)
    assert s["A"] / s["B"] == pytest.approx(3.0, rel=1e-6)  # MLE: p = 3/4 -> ratio 3
    with_tie = [("A", "B", -1), ("A", "B", -1), ("A", "B", 0), ("B", "A", -1)]
    s = bradley_terry(with_tie)
    assert s["A"] / s["B"] == pytest.approx(2.5 / 1.5, rel=1e-6)  # a tie is half a win each
    s = bradley_terry([("A", "B", -1), ("B", "C", -1), ("A", "C", -1), ("B", "A", -1),
                       ("C", "B", -1), ("C", "A", -1), ("A", "C", -1)])
    assert s["A"] > s["C"] and math.prod(s.values()) == pytest.approx(1.0)


def test_rank_correlations_match_scipy() -> None:
    human = [1, 3, 2, 5, 4, 4]
    rouge = [0.1, 0.4, 0.2, 0.9, 0.3, 0.5]
    rho, tau = rank_correlations(human, rouge)
    assert rho == pytest.approx(stats.spearmanr(human, rouge).statistic)
    assert tau == pytest.approx(stats.kendalltau(human, rouge).statistic)
    assert math.isnan(rank_correlations([3, 3, 3], [1, 2, 3])[0])


def test_store_replaces_resumes_and_round_trips_csv(tmp_path: Path) -> None:
    store = RatingStore(tmp_path / "ratings.sqlite")
    with sqlite3.connect(tmp_path / "ratings.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.add_score("ann", "i1", "base", "fluency", 2)
    store.add_score("ann", "i1", "base", "fluency", 4, note="second look")  # replaces
    store.add_score("ann", "i2", "fine-tuned", "fluency", 5)
    store.add_preference("ann", "i1", "fine-tuned", "base", -1)  # stored as (base, fine-tuned, 1)
    store.mark("bob", "i3", "flag", "garbled input")
    assert [(s.item, s.score, s.note) for s in store.scores()] == [
        ("i1", 4, "second look"), ("i2", 5, "")]
    assert [(p.first, p.second, p.preference) for p in store.preferences()] == [
        ("base", "fine-tuned", 1)]
    assert store.done("ann") == {"i1", "i2"} and store.done("bob") == {"i3"}
    with pytest.raises(TunelabError, match="preference 2"):
        store.add_preference("ann", "i1", "a", "b", 2)

    assert store.export_csv(tmp_path / "ratings.csv") == 3
    other = RatingStore(tmp_path / "other.sqlite")
    assert other.import_csv(tmp_path / "ratings.csv") == 3
    assert other.scores() == store.scores() and other.preferences() == store.preferences()
    bad = tmp_path / "bad.csv"
    bad.write_text("table,rater,item,system,criterion,score\nscore,ann,i1,base,fluency,4\n"
                   "score,ann,i2,base,fluency,great\n")
    with pytest.raises(TunelabError, match=r"bad.csv:3: not a rating row"):
        other.import_csv(bad)
    assert len(other.scores()) == 2  # nothing of the bad file was stored
    with pytest.raises(TunelabError, match="no such directory"):
        RatingStore(tmp_path / "missing" / "ratings.sqlite")


def test_kill_9_of_a_writer_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "ratings.sqlite"
    RatingStore(path)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys\nfrom tunelab.human import RatingStore\n"
        f"store = RatingStore({str(path)!r})\n"
        "for i in range(100000):\n"
        "    store.add_score('ann', f'i{i}', 'base', 'fluency', 1 + i % 5)\n"
        "    print(i, flush=True)\n")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    acknowledged = -1
    deadline = time.time() + 60
    while acknowledged < 30 and time.time() < deadline:
        acknowledged = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    rows = RatingStore(path).scores()
    assert len(rows) >= acknowledged + 1 > 30  # every acknowledged rating survived
    assert {r.item for r in rows} >= {f"i{i}" for i in range(acknowledged + 1)}


def test_ratings_command_on_rated_evaluations(tiny_llama: Path, tmp_path: Path, capsys) -> None:
    """Two systems' evaluations in one directory, ratings from two raters (given here in the
    CSV format a spreadsheet would use): every number recomputed from the same inputs."""
    from eval_helpers import REVIEWS

    from tunelab.cli import main
    from tunelab.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig
    from tunelab.eval.compare import item_scores
    from tunelab.eval.datasets import load_task_data
    from tunelab.eval.output_types import Framing
    from tunelab.eval.runner import evaluate_records, write_result
    from tunelab.models import load_model

    task = TaskConfig(name="reviews", data=REVIEWS, output_type="generate",
                      eval=EvalConfig(metrics=["rouge"], generation=GenerationConfig(
                          max_new_tokens=6)))
    lm = load_model(ModelConfig(name=str(tiny_llama)))
    data = load_task_data(task)
    records = data.split("test")
    results = {}
    for system, shots in ((System.base(0), 0), (System.tuned(), 2)):
        results[system.label] = evaluate_records(lm, task, records, shots, data.split("train"),
                                                 system, Framing.of(task, data))
        write_result(results[system.label], tmp_path / "rated" / system.slug)
    keys = [r["origin"] for r in results["base 0-shot"].predictions]
    rng = np.random.default_rng(0)
    lines = ["table,rater,item,system,criterion,score,first,second,preference,note"]
    given: dict[tuple[str, str, str], int] = {}
    for rater in ("ann", "bob"):
        for item in keys:
            for system, offset in (("base 0-shot", 0), ("fine-tuned", 1)):
                value = int(np.clip(rng.integers(1, 5) + offset, 1, 5))
                given[rater, item, system] = value
                lines.append(f"score,{rater},{item},{system},fluency,{value},,,,")
            lines.append(f"preference,{rater},{item},,,,base 0-shot,fine-tuned,"
                         f"{1 if given[rater, item, 'fine-tuned'] > given[rater, item, 'base 0-shot'] else 0},")
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    assert main(["ratings", str(tmp_path / "rated"), "--import", str(tmp_path / "ratings.csv"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    per_item = {s: {i: np.mean([given[r, i, s] for r in ("ann", "bob")]) for i in keys}
                for s in ("base 0-shot", "fine-tuned")}
    means = {(x["system"], x["criterion"]): x["mean"] for x in out["scores"]}
    assert means["fine-tuned", "fluency"] == pytest.approx(np.mean(list(per_item["fine-tuned"].values())))
    diff = out["differences"][0]
    expected = paired_ratings([per_item["base 0-shot"][i] for i in sorted(keys)],
                              [per_item["fine-tuned"][i] for i in sorted(keys)])
    assert diff["delta"] == pytest.approx(expected.delta) and diff["reference"] == "fine-tuned"
    assert diff["wilcoxon_p"] == pytest.approx(expected.wilcoxon_p)
    raters = {r: {f"{i}|{s}": given[r, i, s] for i in keys for s in per_item} for r in ("ann", "bob")}
    agreement = out["agreement"][0]
    assert agreement["alpha"] == pytest.approx(krippendorff_alpha(raters, domain=[1, 2, 3, 4, 5]))
    units = sorted(raters["ann"])
    assert agreement["kappa"] == pytest.approx(weighted_kappa(
        [raters["ann"][u] for u in units], [raters["bob"][u] for u in units], [1, 2, 3, 4, 5]))
    assert out["pairwise"][0]["n"] == 2 * len(keys) and set(out["strengths"]) == set(per_item)
    # no run config and no built-in task named "reviews": no metric correlations, said plainly
    assert out["correlations"] == []
    assert out["note"].startswith("no metric correlations")
    from tunelab.human.report import correlations
    rouge = correlations(task, results, {("fine-tuned", "fluency"): per_item["fine-tuned"]})
    values = dict(zip(keys, item_scores(task, results["fine-tuned"], "rougeL").values, strict=True))
    rho, _ = rank_correlations([per_item["fine-tuned"][i] for i in keys], [values[i] for i in keys])
    by_key = {c.metric: c for c in rouge}
    assert "rougeL (rouge)" in by_key and "rouge1 (rouge)" in by_key
    found = by_key["rougeL (rouge)"].spearman
    assert (math.isnan(rho) and math.isnan(found)) or found == pytest.approx(rho)
    assert main(["ratings", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_every_writer_stores_a_pair_in_one_order(tmp_path: Path) -> None:
    """add_preference, add_judgement and import_csv store a (first, second) pair the same way:
    sorted, the preference flipped with it, so a rater's later judgement of the pair shown the
    other way round replaces the earlier one instead of counting as a second judgement."""
    from tunelab.human.report import ratings_report

    store = RatingStore(tmp_path / "ratings.sqlite")
    store.add_preference("ann", "i1", "base", "fine-tuned", -1)  # base better
    store.add_judgement("bob", "i1", [], [("base", "fine-tuned", 0)])
    sheet = tmp_path / "ratings.csv"
    sheet.write_text("table,rater,item,system,criterion,score,first,second,preference,note\n"
                     "preference,ann,i1,,,,fine-tuned,base,-1,\n"  # ann now: fine-tuned better
                     "preference,bob,i1,,,,fine-tuned,base,1,\n")  # bob now: base better
    assert store.import_csv(sheet) == 2
    stored = [(p.rater, p.item, p.first, p.second, p.preference) for p in store.preferences()]
    assert sorted(stored) == [("ann", "i1", "base", "fine-tuned", 1),
                              ("bob", "i1", "base", "fine-tuned", -1)]

    by_hand = RatingStore(tmp_path / "by_hand.sqlite")
    by_hand.add_preference("ann", "i1", "fine-tuned", "base", -1)
    by_hand.add_judgement("bob", "i1", [], [("fine-tuned", "base", 1)])
    assert sorted((p.rater, p.first, p.second, p.preference) for p in by_hand.preferences()) == [
        (r, f, s, v) for r, _, f, s, v in sorted(stored)]

    report = ratings_report(store)
    assert report.pairwise == [{"first": "base", "second": "fine-tuned", "n": 2,
                                "first_wins": 1, "ties": 0, "second_wins": 1}]
    bad = tmp_path / "bad.csv"
    bad.write_text("table,rater,item,first,second,preference\n"
                   "preference,ann,i2,fine-tuned,base,-1\npreference,ann,i3,b,a,2\n")
    with pytest.raises(TunelabError, match=r"bad.csv:3: not a rating row \(preference 2"):
        store.import_csv(bad)
    assert len(store.preferences()) == 2  # nothing of the bad file was stored
