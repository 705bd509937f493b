"""`tunelab data check` and the leakage guard of `tunelab train`, on real sentences: every
detector on data that has the problem and on data that lacks it."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml
from helpers import tiny_run_config

from tunelab.cli import main
from tunelab.config import to_dict
from tunelab.data import Record
from tunelab.data.checks import TEST, TRAIN, CheckOptions, CheckSet, check_sets
from tunelab.data.sources import read_records

REVIEWS = read_records("builtin:movie_sentiment")  # 200 real movie-review sentences


def _sets(train: list[Record], test: list[Record]) -> list[CheckSet]:
    return [CheckSet.of("train", TRAIN, train), CheckSet.of("test", TEST, test)]


def _check(train: list[Record], test: list[Record], **options: object):  # noqa: ANN202
    return check_sets(_sets(train, test), CheckOptions(label_errors=False, **options))


def _copy(record: Record, **changes: str) -> Record:
    fields = {"instruction": record.instruction, "input": record.input, "output": record.output,
              "origin": record.origin + "-copy"} | changes
    return Record(**fields, columns=dict(record.columns, **{k: v for k, v in changes.items()
                                                            if k != "origin"}))


def test_clean_data_has_no_duplicates_leaks_or_conflicts() -> None:
    check = _check(REVIEWS[:120], REVIEWS[120:])
    assert check.crossings == [] and check.conflicts == []
    assert all(sum(found.values()) == 0 for found in check.within.values())
    assert check.drop == {"train": set()}


def test_exact_duplicates_after_whitespace_and_case_normalisation() -> None:
    shouted = _copy(REVIEWS[3], input="  " + REVIEWS[3].input.upper().replace(" ", "   ") + " ")
    check = _check([*REVIEWS[:100], shouted], REVIEWS[150:])
    assert check.within["train"] == {"exact": 1, "near": 0, "ngram13": 0}
    assert check.drop["train"] == {100}  # the later copy goes, the first stays


def test_near_duplicates_by_minhash_and_their_threshold() -> None:
    at = next(i for i, r in enumerate(REVIEWS) if len(r.input.split()) > 25)
    assert at < 100
    original = REVIEWS[at].input
    edited = original.replace(" the ", " this ", 1)  # one word changed
    assert edited != original
    check = _check([*REVIEWS[:100]], [_copy(REVIEWS[at], input=edited), *REVIEWS[150:160]])
    leak = check.crossings[0]
    assert (leak.earlier.name, leak.later.name) == ("train", "test")
    assert leak.found["exact"] == 0 and leak.found["near"] == 1 and leak.later_items == {0}
    assert leak.guarded  # test items in the training data stop `tunelab train`
    strict = _check([*REVIEWS[:100]], [_copy(REVIEWS[at], input=edited)], threshold=0.99)
    assert strict.crossings[0].found == {"exact": 0, "near": 0, "ngram13": 1}  # long: 13-grams
    off = _check([*REVIEWS[:100]], [_copy(REVIEWS[at], input=edited)], threshold=0)
    assert "near" not in off.within["train"]


def test_13_gram_overlap_inside_a_longer_text() -> None:
    long = max(REVIEWS, key=lambda r: len(r.input.split()))
    assert len(long.input.split()) >= 13
    quoted = _copy(REVIEWS[0], input="A critic wrote, and I quote, that " + long.input +
                   " Which I think misses the point of the film entirely, and most of the "
                   "plot as well, from the first scene to the credits.")
    check = _check([r for r in REVIEWS if r is not long][:150], [quoted])
    assert check.crossings == []  # the long sentence is not in train: nothing shared
    check = _check([long, *REVIEWS[:50]], [quoted])
    assert check.crossings[0].found == {"exact": 0, "near": 0, "ngram13": 1}
    assert check.crossings[0].leak and not check.crossings[0].guarded  # reported, not refused


def test_conflicting_labels_same_input_different_outputs() -> None:
    flipped = _copy(REVIEWS[5], output="positive" if REVIEWS[5].output == "negative"
                    else "negative")
    check = _check(REVIEWS[:100], [flipped])
    assert len(check.conflicts) == 1 and len(check.conflicts[0].items) == 2
    assert {i.output for i in check.conflicts[0].items} == {"positive", "negative"}
    assert _check(REVIEWS[:100], [_copy(REVIEWS[5])]).conflicts == []  # same label: no conflict


def test_quality_empty_cells_encoding_language_and_labels() -> None:
    broken = [_copy(REVIEWS[0], input="the cafÃ© scene is the best part of the film ."),
              _copy(REVIEWS[1], input="a quiet\x07 film with a bell in it ."),
              _copy(REVIEWS[2], input="der Film ist nicht gut und die Musik ist zu laut ."),
              _copy(REVIEWS[3], output="  ")]
    check = check_sets([CheckSet.of("train", TRAIN, [*REVIEWS[10:60], *broken])],
                       CheckOptions(labels=["positive", "negative"], label_errors=False))
    quality = check.quality[0]
    assert (quality.mojibake, quality.control, quality.empty_output) == (1, 1, 1)
    assert quality.empty_cells == {"output": 1}
    assert quality.broken[0].fixed.startswith("the café scene")
    assert quality.languages["de"] == 1 and quality.languages["en"] > 40
    assert quality.labels["positive"] + quality.labels["negative"] == 53
    clean = check_sets([CheckSet.of("train", TRAIN, REVIEWS[10:60])],
                       CheckOptions(labels=["positive", "negative"], label_errors=False))
    assert (clean.quality[0].mojibake, clean.quality[0].control,
            clean.quality[0].empty_output) == (0, 0, 0)


def test_label_errors_finds_labels_flipped_on_purpose() -> None:
    """Two real topics (movie reviews, news sentences); 6 labels flipped: confident learning on
    cross-validated probabilities ranks them first (at least 5 of the top 6)."""
    news = [s.strip() + "." for r in read_records("builtin:news")
            for s in r.output.split(". ") if len(s.split()) > 8][:120]
    records = [Record(instruction="Topic?", input=r.input, output="movie", origin=f"m{i}")
               for i, r in enumerate(REVIEWS[:120])]
    records += [Record(instruction="Topic?", input=text, output="news", origin=f"n{i}")
                for i, text in enumerate(news)]
    flipped = set(random.Random(0).sample(range(len(records)), 6))
    for i in flipped:
        records[i].output = "news" if records[i].output == "movie" else "movie"
    check = check_sets([CheckSet.of("train", TRAIN, records)],
                       CheckOptions(labels=["movie", "news"]))
    found = check.label_errors
    assert found is not None and found.accuracy is not None and found.accuracy > 0.9
    wanted = {records[i].origin for i in flipped}
    assert len({s.origin for s in found.suspects[:6]} & wanted) >= 5
    assert len(wanted & {s.origin for s in found.suspects}) >= 5
    assert all(s.suggested != s.given for s in found.suspects)
    clean = [Record(instruction="Topic?", input=r.input, output=o, origin=r.origin)
             for r, o in zip(records, [("news" if r.output == "movie" else "movie")
                                       if i in flipped else r.output
                                       for i, r in enumerate(records)], strict=True)]
    unflipped = check_sets([CheckSet.of("train", TRAIN, clean)],
                           CheckOptions(labels=["movie", "news"])).label_errors
    assert unflipped is not None and len(unflipped.suspects) < len(found.suspects) - 5


# ---- the command --------------------------------------------------------------------------

def _write_jsonl(path: Path, records: list[Record]) -> Path:
    path.write_text("".join(json.dumps({"text": r.input, "label": r.output}) + "\n"
                            for r in records))
    return path


def _split_config(tiny_llama: Path, tmp_path: Path, train: list[Record], **data: object) -> Path:
    config = tiny_run_config(tiny_llama, tmp_path / "runs", name="leaky")
    config.data.train_file = str(_write_jsonl(tmp_path / "train.jsonl", train))
    config.data.validation_file = str(_write_jsonl(tmp_path / "val.jsonl", REVIEWS[160:170]))
    config.data.test_file = str(_write_jsonl(tmp_path / "test.jsonl", REVIEWS[170:200]))
    for key, value in data.items():
        setattr(config.data, key, value)
    path = tmp_path / "leaky.yaml"
    path.write_text(yaml.safe_dump(to_dict(config)))
    return path


def test_command_table_json_and_fix_never_touching_the_input(tiny_llama: Path, tmp_path: Path,
                                                             capsys) -> None:
    train = [*REVIEWS[:60], REVIEWS[170], REVIEWS[171], REVIEWS[5]]  # 2 test items, 1 repeat
    config = _split_config(tiny_llama, tmp_path, train)
    before = hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()
    out, fixed = tmp_path / "check.json", tmp_path / "fixed.jsonl"
    assert main(["data", "check", str(config), "--out", str(out), "--fix", str(fixed)]) == 0
    table = capsys.readouterr().out
    assert "test in train" in table and "LEAK: stops train" in table
    figures = json.loads(out.read_text())
    leak = next(c for c in figures["across"] if c["sets"] == ["train", "test"])
    assert leak["found"]["exact"] == 2 and leak["guarded"]
    assert figures["within"]["train"]["exact"] == 1 and figures["drop"] == {"train": 3}
    assert figures["quality"][0]["tokens"]["max"] > 0  # the run's template and tokenizer
    assert hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest() == before
    assert len(fixed.read_text().splitlines()) == 60
    assert len((tmp_path / "fixed.test.jsonl").read_text().splitlines()) == 30
    # the fixed copy is clean: checked again, nothing leaks and nothing repeats
    assert main(["data", "check", str(config), f"data.train_file={fixed}", "--out", str(out),
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["across"] == [] and again["drop"] == {"train": 0}


def test_against_a_builtin_task(tmp_path: Path, capsys) -> None:
    from tunelab.eval.tasks import load_task, read_task

    scored = read_task(load_task("movie_sentiment"), 0).records
    data = _write_jsonl(tmp_path / "mine.jsonl", [*REVIEWS[:3], scored[0]])
    mine = [r for r in REVIEWS[:3] if r.input not in {s.input for s in scored}]
    assert main(["data", "check", str(data), "--fields", "input=text,output=label",
                 "--against", "movie_sentiment", "--json", "--out",
                 str(tmp_path / "c.json")]) == 0
    figures = json.loads(capsys.readouterr().out)
    crossing = next(c for c in figures["across"] if c["sets"][1] == "task:movie_sentiment")
    assert crossing["total"] == 4 - len(mine) and crossing["leak"]


def test_train_refuses_leaked_test_items_before_a_model_loads(tiny_llama: Path, tmp_path: Path,
                                                              capsys, monkeypatch) -> None:
    config = _split_config(tiny_llama, tmp_path, [*REVIEWS[:40], REVIEWS[170], REVIEWS[175]])

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model loaded before the leakage check")

    monkeypatch.setattr("tunelab.runs.start.load_model", no_model)  # a run loads here
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "2 of the 30 test items are also in the training data" in err
    assert "data.dedup: true" in err and "--allow-leakage" in err
    assert not (tmp_path / "runs" / "leaky").exists()
    monkeypatch.undo()
    assert main(["data", "inspect", str(config), "-n", "0"]) == 0  # says so in one line too
    assert "data check: 0 duplicate examples, 2 test items in train" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["dedup", "allow"])
def test_dedup_drops_them_or_allow_leakage_trains_and_reports(how: str, tiny_llama: Path,
                                                              tmp_path: Path, capsys) -> None:
    leaky = [*REVIEWS[:40], REVIEWS[170], REVIEWS[175]]
    config = _split_config(tiny_llama, tmp_path, leaky, dedup=how == "dedup")
    args = ["train", str(config), "train.max_steps=2", "--no-eval"]
    assert main(args + (["--allow-leakage"] if how == "allow" else [])) == 0
    run = tmp_path / "runs" / "leaky"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_check"]["leaked"] == {"test in train": 2}
    assert summary["train_examples"] == (40 if how == "dedup" else 42)
    page = (run / "report.html").read_text()
    assert "Data check" in page and "test in train" in page
    said = ("data.dedup dropped 2 of 42 training examples" if how == "dedup"
            else "data.allow_leakage: trained with 2 items of test in train")
    assert said in page and said in (run / "data_check.json").read_text()


def test_bad_threshold_is_one_line(tmp_path: Path, capsys) -> None:
    data = _write_jsonl(tmp_path / "d.jsonl", REVIEWS[:10])
    assert main(["data", "check", str(data), "--fields", "input=text,output=label",
                 "--threshold", "2", "--out", str(tmp_path / "c.json")]) == 2
    assert "--threshold 2" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def _task(name: str, held_out: bool = False):  # noqa: ANN202
    from tunelab.config import DataConfig, TrainTaskConfig

    return TrainTaskConfig(name=name, data=DataConfig(), held_out=held_out)


def test_a_leak_into_another_tasks_test_split_stops_a_multi_task_run() -> None:
    """Task a's test item in task b's training data: the set order puts a/test before b/train,
    and the guard still finds it; a held-out task's train split is never trained on."""
    from tunelab.config import RunConfig
    from tunelab.core.errors import TunelabError
    from tunelab.data import Splits
    from tunelab.workflows.data_check import guard_run_data

    a = Splits(REVIEWS[:40], REVIEWS[40:50], REVIEWS[50:60])
    b = Splits([*REVIEWS[100:140], REVIEWS[55]], REVIEWS[140:150], REVIEWS[150:160])
    with pytest.raises(TunelabError, match=r"1 of the 10 a/test items .* task b: data.dedup"):
        guard_run_data(RunConfig(), [_task("a"), _task("b")], {"a": a, "b": b}, {})
    held = Splits([*REVIEWS[100:140], REVIEWS[55]], REVIEWS[140:150], REVIEWS[150:160])
    check, kept = guard_run_data(RunConfig(), [_task("a"), _task("b", held_out=True)],
                                 {"a": a, "b": held}, {})
    assert check.guarded_leaks == [] and kept["b"] is held
    shared = next(c for c in check.crossings if c.total)
    assert not shared.leak and {shared.earlier.name, shared.later.name} == {"a/test", "b/train"}


def test_large_groups_and_template_phrases() -> None:
    """60 copies of one sentence across train and test count each copy once; a 13-word phrase
    that most inputs of a set repeat is the template, not a leak."""
    copies = [_copy(REVIEWS[70], origin=f"copy{i}") for i in range(60)]
    check = _check([*REVIEWS[:20], *copies[:40]], [*REVIEWS[150:170], *copies[40:]])
    assert check.within["train"]["exact"] == 39 and check.within["test"]["exact"] == 19
    leak = check.crossings[0]
    assert leak.total == leak.found["exact"] == 20 and len(check.drop["train"]) == 40
    phrase = "please read the following movie review very carefully and then tell me what"
    assert len(phrase.split()) == 13
    train = [_copy(r, input=f"{phrase} {r.input}") for r in REVIEWS[:40]]
    test = [_copy(r, input=f"{phrase} {r.input}") for r in REVIEWS[150:180]]
    assert _check(train, test).crossings == []


def test_fix_never_writes_over_an_input(tmp_path: Path, capsys) -> None:
    data = _write_jsonl(tmp_path / "d.jsonl", [*REVIEWS[:10], REVIEWS[3]])
    before = data.read_bytes()
    assert main(["data", "check", str(data), "--fields", "input=text,output=label", "--fix",
                 str(data), "--out", str(tmp_path / "c.json")]) == 2
    assert "would overwrite the input" in capsys.readouterr().err and data.read_bytes() == before
    assert main(["data", "check", str(data), "--fields", "input=text,output=label", "--fix",
                 str(tmp_path / "fixed.csv"), "--out", str(tmp_path / "c.json")]) == 2
    assert ".jsonl" in capsys.readouterr().err
    assert main(["data", "check", str(data), "--fields", "input=text,output=label", "--fix",
                 str(tmp_path / "fixed.jsonl"), "--out", str(tmp_path / "c.json")]) == 0
    assert len((tmp_path / "fixed.jsonl").read_text().splitlines()) == 10


def test_a_task_file_is_checked_split_by_split(tmp_path: Path, capsys) -> None:
    """A task YAML (no method or model section) is a task, checked as its splits."""
    data = _write_jsonl(tmp_path / "d.jsonl", [*REVIEWS[:40], REVIEWS[3], REVIEWS[4]])
    task = tmp_path / "mine.yaml"
    task.write_text(yaml.safe_dump({
        "name": "mine", "data": {"source": str(data), "fields": {"input": "text",
                                                                "output": "label"},
                                 "test_size": 10, "validation_size": 0, "split_seed": 0},
        "eval": {"metrics": ["classification"], "labels": ["positive", "negative"]}}))
    assert main(["data", "check", str(task), "--json", "--no-label-errors", "--out",
                 str(tmp_path / "c.json")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in figures["sets"]] == ["mine/train", "mine/test"]
    repeats = sum(f["exact"] for f in figures["within"].values())
    crossed = sum(c["found"]["exact"] for c in figures["across"])
    assert repeats + crossed == 2  # the two copies, wherever the seeded split put them
