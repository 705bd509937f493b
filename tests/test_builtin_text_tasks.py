"""The built-in generation data sets (newsgroup subject lines, world-facts questions) and their
tasks: real rows from gensim's test data, deterministic, one row per subject, and the task's
metrics computed on a few made-up predictions."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data.builtin_datasets import (
    BUILTIN_INSTRUCTIONS,
    analogy_pairs,
    newsgroup_subjects,
    world_facts,
)
from tunelab.data.sources import load_splits, read_records
from tunelab.eval.metrics import task_metrics
from tunelab.eval.tasks import load_task


def test_newsgroup_subjects_one_row_per_subject_without_reply_markers() -> None:
    records = read_records("builtin:newsgroup_subjects")
    assert len(records) == 120
    subjects = [r.output for r in records]
    assert len({s.lower() for s in subjects}) == len(subjects)
    assert not any(s.lower().startswith("re:") or "(was" in s.lower() for s in subjects)
    assert all(len(s.split()) >= 2 and 10 <= len(r.input.split()) <= 301
               for s, r in zip(subjects, records, strict=True))
    assert {r.instruction for r in records} == {BUILTIN_INSTRUCTIONS["newsgroup_subjects"]}
    assert "Big amateur rockets" in subjects
    assert list(newsgroup_subjects()) == list(newsgroup_subjects())  # deterministic


def test_world_facts_questions_and_answers() -> None:
    rows = dict(world_facts())
    assert len(rows) == 212
    relations = Counter(origin.split("[")[1].split(":")[0] for origin in rows)
    assert relations == {"capital": 116, "state": 66, "currency": 30}
    by_question = {row["input"]: row["output"] for row in rows.values()}
    assert len(by_question) == len(rows)  # one row per (relation, subject)
    assert by_question["What is the capital of Greece?"] == "Athens"
    assert by_question["What is the currency of Japan?"] == "yen"
    assert by_question["Which US state is Chicago in?"] == "Illinois"
    assert "Which US state is Glendale in?" not in by_question  # two answers in the file
    assert {row["instruction"] for row in rows.values()} == {BUILTIN_INSTRUCTIONS["world_facts"]}
    assert list(world_facts()) == list(world_facts())
    sections = analogy_pairs()
    assert ("Athens", "Greece") in sections["capital-common-countries"]
    assert len(sections) == 14


@pytest.mark.parametrize(("name", "sizes", "predictions", "expected"), [
    ("newsgroup_subjects", (70, 10, 40), ["Big amateur rockets", "something else entirely"],
     {"rouge1": 50.0, "rougeL": 50.0}),
    ("world_facts", (132, 20, 60), ["Athens", "The capital is Athens."],
     {"exact_match": 50.0, "f1": 75.0}),
])
def test_builtin_generation_task_splits_and_scores(name: str, sizes: tuple[int, int, int],
                                                   predictions: list[str],
                                                   expected: dict[str, float]) -> None:
    task = load_task(name)
    assert task.output_type == "generate" and task.data.source == f"builtin:{name}"
    splits = load_splits(task.data)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == sizes
    train = {r.input for r in splits.train}
    assert not train & {r.input for r in splits.test}
    reference = "Big amateur rockets" if name == "newsgroup_subjects" else "Athens"
    scores: dict[str, float] = {}
    for metric in task_metrics(task).values():
        items = [metric.item(p, reference) for p in predictions]
        scores.update(metric.aggregate(items))
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value)
