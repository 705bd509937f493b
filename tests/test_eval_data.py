"""Benchmark data readers on small fixtures in the exact layouts: BIG-bench task.json, SQuAD
v1.1 JSON, MMLU CSV folders, GLUE TSV and SuperGLUE JSONL folders; and `data fetch`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from eval_helpers import EVAL_DATA

from tunelab.config import DataConfig, TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data.sources import SCHEMES, read_records, source_scheme
from tunelab.eval.datasets import BENCHMARKS, load_task_data
from tunelab.eval.datasets.bigbench import read_bigbench_file, read_squad_file
from tunelab.eval.datasets.fetch import fetch_bigbench

ALL_TEST = DataConfig(test_size=0.99, validation_size=0)


def _task(source: str, **data) -> TaskConfig:
    return TaskConfig(data=DataConfig(source=source, **data))


def test_bigbench_multiple_choice_formats_like_bigbench() -> None:
    path = EVAL_DATA / "bigbench" / "general_knowledge_task.json"
    data = read_bigbench_file(str(path), DataConfig(test_size=4, validation_size=0, split_seed=0))
    records = data.splits["train"] + data.splits["test"]
    assert len(records) == 8  # the duplicated example is dropped, as BIG-bench drops it
    horse = next(r for r in records if r.input == "How many legs do horses have?")
    choices = horse.columns["choices"]
    assert choices == ["two", "four", "six", "three", "one", "none"]
    assert horse.columns["gold"] == [1] and horse.output == "four"
    # append_choices_to_input: choices listed in BIG-bench's seeded order, then the output prefix
    assert horse.columns["prompt"].startswith("\nQ: How many legs do horses have?\n  choice: ")
    assert horse.columns["prompt"].endswith("\nA: ")
    assert sorted(horse.columns["prompt"].split("\n  choice: ")[1:-1] +
                  [horse.columns["prompt"].split("\n  choice: ")[-1][:-len("\nA: ")]]) == sorted(choices)
    assert data.preamble == "" and data.separator == "\n"


def test_bigbench_prefixes_preamble_and_separator() -> None:
    path = EVAL_DATA / "bigbench" / "logical_deduction_task.json"
    data = read_bigbench_file(str(path), DataConfig(test_size=3, validation_size=0))
    raw = json.loads(path.read_text())
    assert data.preamble == raw["task_prefix"] and data.separator == "\n\n"
    record = data.splits["test"][0]
    assert record.columns["prompt"] == record.input + " "  # input prefix '', output prefix ' '


def test_bigbench_generative_targets() -> None:
    data = read_bigbench_file(str(EVAL_DATA / "bigbench" / "xsum_task.json"), ALL_TEST)
    record = (data.splits["test"] + data.splits["train"])[0]
    assert record.columns["prompt"].startswith("\nsummarize: ")
    assert record.columns["prompt"].endswith("\none-sentence summary: ")
    assert record.columns["targets"][0] == record.output


def test_bigbench_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "task.json"
    bad.write_text('{"examples": [{"input": "x"}]}')
    with pytest.raises(TunelabError, match="task.json example 0: an example needs"):
        read_bigbench_file(str(bad), ALL_TEST)
    bad.write_text('{"examples": [')
    with pytest.raises(TunelabError, match="malformed JSON"):
        read_bigbench_file(str(bad), ALL_TEST)
    with pytest.raises(TunelabError, match="tunelab data fetch bigbench --task no_such_task"):
        load_task_data(_task("bigbench:no_such_task"))


def test_squad_v11_layout() -> None:
    data = read_squad_file(str(EVAL_DATA / "squad_dev_tiny.json"), ALL_TEST)
    records = data.splits["test"] + data.splits["train"]
    assert len(records) == 6
    first = next(r for r in records if r.input == "Which NFL team represented the AFC at Super Bowl 50?")
    assert first.columns["targets"] == ["Denver Broncos"] * 3
    assert first.columns["prompt"].startswith("Title: Super_Bowl_50\nBackground: Super Bowl 50 was")
    assert first.columns["prompt"].endswith("\nQ: Which NFL team represented the AFC at Super Bowl 50?\nA: ")


def test_mmlu_csv_layout() -> None:
    data = load_task_data(_task(f"mmlu:{EVAL_DATA / 'mmlu'}"))
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [3, 2, 6]
    one = load_task_data(_task(f"mmlu:{EVAL_DATA / 'mmlu'}:anatomy"))
    assert one.preamble == "The following are multiple choice questions (with answers) about anatomy.\n\n"
    record = one.splits["test"][2]
    assert record.columns["prompt"] == ("The pleura\nA. have no sensory innervation.\nB. are separated "
                                        "by a 2 mm space.\nC. extend into the neck.\nD. are composed "
                                        "of respiratory epithelium.\nAnswer:")
    assert record.columns["choices"] == ["A", "B", "C", "D"] and record.columns["gold"] == [2]
    # A question with commas inside quotes is one cell.
    algebra = load_task_data(_task(f"mmlu:{EVAL_DATA / 'mmlu'}:abstract_algebra")).splits["test"]
    assert algebra[0].columns["options"] == ["True, True", "False, False", "True, False", "False, True"]
    with pytest.raises(TunelabError, match="unknown subject 'astronomy'"):
        load_task_data(_task(f"mmlu:{EVAL_DATA / 'mmlu'}:astronomy"))


def test_glue_tsv_layouts() -> None:
    sst2 = load_task_data(_task(f"glue:{EVAL_DATA / 'glue' / 'SST-2'}"))
    record = sst2.splits["test"][0]
    assert record.columns["prompt"] == ("it 's a charming and often affecting journey . \nQuestion: "
                                        "Is this sentence positive or negative?\nAnswer:")
    assert record.output == "positive" and len(sst2.splits["train"]) == 4
    rte = load_task_data(_task(f"glue:{EVAL_DATA / 'glue' / 'RTE'}")).splits["validation"]
    assert [r.output for r in rte] == ["False", "True"]
    cola = load_task_data(_task(f"glue:{EVAL_DATA / 'glue' / 'CoLA'}")).splits["train"]  # no header
    assert [r.output for r in cola] == ["yes", "yes", "no"] and cola[2].input == "They drank the pub."
    mnli = load_task_data(_task(f"glue:{EVAL_DATA / 'glue' / 'MNLI'}")).splits["test"]
    assert [r.output for r in mnli] == ["Neither", "False"]
    assert mnli[0].columns["prompt"].endswith("Everyone really likes the newest benefits. True, False or Neither?\nAnswer:")


def test_superglue_jsonl_layouts() -> None:
    boolq = load_task_data(_task(f"superglue:{EVAL_DATA / 'superglue' / 'BoolQ'}")).splits["test"]
    assert [r.output for r in boolq] == ["no", "yes"]
    assert boolq[1].columns["prompt"].endswith("\nQuestion: is house tax and property tax are same?\nAnswer:")
    cb = load_task_data(_task(f"superglue:{EVAL_DATA / 'superglue' / 'CB'}")).splits["test"]
    assert [r.output for r in cb] == ["True", "False", "Neither"]
    copa = load_task_data(_task(f"superglue:{EVAL_DATA / 'superglue' / 'COPA'}")).splits["test"][0]
    assert copa.columns["prompt"] == "The elderly woman suffered a stroke therefore"
    assert copa.columns["choices"][1] == " the woman's daughter moved in to take care of her."
    wsc = load_task_data(_task(f"superglue:{EVAL_DATA / 'superglue' / 'WSC'}")).splits["test"]
    assert '*He* should have been more truthful' in wsc[0].columns["prompt"]
    assert [r.output for r in wsc] == ["yes", "no"]
    with pytest.raises(TunelabError, match="folder 'mmlu' is not a task"):
        load_task_data(_task(f"superglue:{EVAL_DATA / 'mmlu'}"))


def _fake_sdist(path: Path) -> Path:
    """A tarball laid out like bigbench-1.0.0.tar.gz, holding two tiny tasks and other files."""
    files = {
        "bigbench-1.0.0/bigbench/benchmark_tasks/general_knowledge/task.json":
            (EVAL_DATA / "bigbench" / "general_knowledge_task.json").read_bytes(),
        "bigbench-1.0.0/bigbench/benchmark_tasks/general_knowledge/README.md": b"# readme",
        "bigbench-1.0.0/bigbench/benchmark_tasks/logical_deduction/three_objects/task.json":
            (EVAL_DATA / "bigbench" / "logical_deduction_task.json").read_bytes(),
        "bigbench-1.0.0/bigbench/api/task.py": b"",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_fetch_extracts_only_the_task_files(tmp_path: Path) -> None:
    sdist = _fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    result = fetch_bigbench(["general_knowledge", "logical_deduction/three_objects"], sdist=sdist)
    assert sorted(result.extracted) == ["general_knowledge/task.json",
                                        "logical_deduction/three_objects/task.json"]
    data = load_task_data(_task("bigbench:logical_deduction/three_objects", test_size=3,
                                validation_size=0))
    assert len(data.splits["test"]) == 3
    with pytest.raises(TunelabError, match="BIG-bench has no task 'navigate'"):
        fetch_bigbench(["navigate"], sdist=sdist)


@pytest.mark.parametrize("name", [
    "bigbench-1.0.0/bigbench/benchmark_tasks/general_knowledge/../../../../../escape/task.json",
    "bigbench-1.0.0/bigbench/benchmark_tasks/{outside}/escape/task.json"])
def test_fetch_refuses_a_member_that_lands_outside_the_cache(tmp_path: Path, name: str) -> None:
    """A crafted sdist: a "../" member and an absolute one are refused, nothing is written
    outside the cache."""
    outside = tmp_path / "outside"
    outside.mkdir()
    sdist = _fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    crafted = tmp_path / "crafted.tar.gz"
    with tarfile.open(sdist) as source, tarfile.open(crafted, "w:gz") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member))
        info = tarfile.TarInfo(name.format(outside=outside))
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    for every in (False, True):  # (the absolute name is no wanted task's file: skipped)
        if every or ".." in name:
            with pytest.raises(TunelabError, match="would land outside"):
                fetch_bigbench(["general_knowledge"], sdist=crafted, every_task=every)
        else:
            fetch_bigbench(["general_knowledge"], sdist=crafted)
    assert not list(tmp_path.rglob("escape")) and not list(Path(tmp_path.anchor).glob("escape"))


def test_fetch_command(tmp_path: Path, capsys) -> None:
    from tunelab.cli import main

    sdist = _fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    assert main(["data", "fetch", "bigbench", "--task", "general_knowledge", "--sdist", str(sdist)]) == 0
    assert "extracted 1 files" in capsys.readouterr().out
    assert main(["data", "fetch", "bigbench", "--sdist", str(tmp_path / "nope.tar.gz")]) == 2


def test_benchmark_layouts_are_schemes_of_the_one_source_registry() -> None:
    assert {scheme.name for scheme in BENCHMARKS} == {"bigbench", "bigbench-file", "squad",
                                                      "mmlu", "glue", "superglue"}
    for scheme in BENCHMARKS:
        assert SCHEMES[scheme.name] is scheme and scheme.reads_prompts
    completions = {f"bigbench-file:{EVAL_DATA}/bigbench/general_knowledge_task.json": "{output}",
                   f"mmlu:{EVAL_DATA / 'mmlu'}": " {output}",
                   f"superglue:{EVAL_DATA / 'superglue' / 'BoolQ'}": " {output}",
                   f"superglue:{EVAL_DATA / 'superglue' / 'COPA'}": "{output}"}
    for source, completion in completions.items():
        assert source_scheme(source).completion_format(source) == completion
    absent = "bigbench:no_such_task"
    assert source_scheme(absent).missing(absent) == "tunelab data fetch bigbench"
    assert source_scheme(absent).fetched_task(absent) == "no_such_task"
    glue = f"glue:{EVAL_DATA / 'glue' / 'SST-2'}"
    assert source_scheme(glue).missing(glue) is None and source_scheme(glue).fetched_task(glue) is None
    with pytest.raises(TunelabError, match="mmlu: data is for evaluation tasks"):
        read_records(f"mmlu:{EVAL_DATA / 'mmlu'}")
