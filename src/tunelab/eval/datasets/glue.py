"""GLUE and SuperGLUE task folders as their official downloads lay them out.

GLUE (`download_glue_data.py`): one folder per task with tab-separated `train.tsv` and
`dev.tsv` (MNLI: `dev_matched.tsv`); CoLA's files have no header. SuperGLUE: one folder per
task with `train.jsonl` and `val.jsonl`. Test labels are hidden in both, so the labelled dev
set is the `validation` split and also the `test` split. The task is known from the folder
name. Prompts and choices are lm-evaluation-harness's, so scores are comparable:

    SST-2  "{sentence}\\nQuestion: Is this sentence positive or negative?\\nAnswer:"  negative|positive
    RTE    "{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:"           True|False
    BoolQ  "{passage}\\nQuestion: {question}?\\nAnswer:"                            no|yes
    ... (CoLA, MRPC, QNLI, QQP, WNLI, MNLI, CB, COPA, WiC, WSC below)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Record, TaskData
from tunelab.data.records import choice_record
from tunelab.eval.datasets.common import BenchmarkSource

Row = dict[str, Any]  # Any: a JSONL row's JSON values


@dataclass(frozen=True)
class GlueTask:
    choices: tuple[str, ...]
    prompt: Callable[[Row], str]
    gold: Callable[[Row], int]
    """Index of the gold choice."""
    text: Callable[[Row], str]
    """The main input text (shown in reports)."""
    files: tuple[str, str] = ("train", "dev")
    columns: tuple[str, ...] | None = None
    """Column names for files without a header row (CoLA)."""


def _index(values: list[str]) -> Callable[[str], int]:
    return lambda label: values.index(str(label).strip())


def _entail_2(row: Row) -> int:
    return _index(["entailment", "not_entailment"])(row["label"])


def _mnli_prompt(row: Row) -> str:
    hypothesis = row["sentence2"].strip()
    hypothesis += "" if hypothesis.endswith(".") else "."
    return f"{row['sentence1']}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:"


GLUE: dict[str, GlueTask] = {
    "sst2": GlueTask(("negative", "positive"),
                     lambda r: f"{r['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:",
                     lambda r: int(r["label"]), lambda r: r["sentence"]),
    "cola": GlueTask(("no", "yes"),
                     lambda r: f"{r['sentence']}\nQuestion: Does this sentence make sense?\nAnswer:",
                     lambda r: int(r["label"]), lambda r: r["sentence"],
                     columns=("source", "label", "original_label", "sentence")),
    "mrpc": GlueTask(("no", "yes"),
                     lambda r: f"Sentence 1: {r['#1 String']}\nSentence 2: {r['#2 String']}\n"
                               "Question: Do both sentences mean the same thing?\nAnswer:",
                     lambda r: int(r["Quality"]), lambda r: r["#1 String"]),
    "qnli": GlueTask(("yes", "no"),
                     lambda r: f"{r['question']}\n{r['sentence']}\n"
                               "Question: Does this response answer the question?\nAnswer:",
                     _entail_2, lambda r: r["question"]),
    "qqp": GlueTask(("no", "yes"),
                    lambda r: f"Question 1: {r['question1']}\nQuestion 2: {r['question2']}\n"
                              "Question: Do both questions ask the same thing?\nAnswer:",
                    lambda r: int(r["is_duplicate"]), lambda r: r["question1"]),
    "rte": GlueTask(("True", "False"),
                    lambda r: f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?\nAnswer:",
                    _entail_2, lambda r: r["sentence1"]),
    "wnli": GlueTask(("False", "True"),
                     lambda r: f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?\nAnswer:",
                     lambda r: int(r["label"]), lambda r: r["sentence1"]),
    "mnli": GlueTask(("True", "Neither", "False"), _mnli_prompt,
                     lambda r: _index(["entailment", "neutral", "contradiction"])(r["gold_label"]),
                     lambda r: r["sentence1"], files=("train", "dev_matched")),
}


def _wsc_prompt(row: Row) -> str:
    target = row["target"]
    words = row["text"].split()
    pre = " ".join(words[:target["span2_index"]])
    post = row["text"][len(pre) + len(target["span2_text"]) + 1:]
    passage = pre + f" *{target['span2_text']}*" + post
    return (f"Passage: {passage}\nQuestion: In the passage above, does the pronoun "
            f"\"*{target['span2_text']}*\" refer to \"*{target['span1_text']}*\"?\nAnswer:")


def _copa_choice(text: str) -> str:
    return text[0].lower() + text[1:]


SUPERGLUE: dict[str, GlueTask] = {
    "boolq": GlueTask(("no", "yes"), lambda r: f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:",
                      lambda r: int(bool(r["label"])), lambda r: r["question"], ("train", "val")),
    "cb": GlueTask(("True", "False", "Neither"),
                   lambda r: f"{r['premise']}\nQuestion: {r['hypothesis']}. True, False, or Neither?\nAnswer:",
                   lambda r: _index(["entailment", "contradiction", "neutral"])(r["label"]),
                   lambda r: r["premise"], ("train", "val")),
    "rte": GlueTask(("True", "False"),
                    lambda r: f"{r['premise']}\nQuestion: {r['hypothesis']} True or False?\nAnswer:",
                    _entail_2, lambda r: r["premise"], ("train", "val")),
    "wic": GlueTask(("no", "yes"),
                    lambda r: f"Sentence 1: {r['sentence1']}\nSentence 2: {r['sentence2']}\nQuestion: Is "
                              f"the word '{r['sentence1'][r['start1']:r['end1']]}' used in the same way "
                              "in the two sentences above?\nAnswer:",
                    lambda r: int(bool(r["label"])), lambda r: r["sentence1"], ("train", "val")),
    "wsc": GlueTask(("no", "yes"), _wsc_prompt, lambda r: int(bool(r["label"])),
                    lambda r: r["text"], ("train", "val")),
}


def _task_name(folder: Path, names: set[str], option: str) -> str:
    name = folder.name.lower().replace("-", "").replace("_", "")
    name = "wsc" if name == "wscfixed" else name
    if name not in names:
        raise TunelabError(f"data.source '{option}': folder '{folder.name}' is not a task this "
                           f"reader knows ({', '.join(sorted(names))}); name the folder after the task")
    return name


def read_glue(argument: str, config: DataConfig) -> TaskData:
    folder = Path(argument).expanduser()
    name = _task_name(folder, set(GLUE), f"glue:{argument}")
    task = GLUE[name]
    splits = {}
    for split, stem in zip(("train", "validation"), task.files, strict=True):
        path = folder / f"{stem}.tsv"
        splits[split] = [_record(task, row, origin) for origin, row in _tsv_rows(path, task.columns)]
    splits["test"] = splits["validation"]
    return TaskData(splits, separator="\n\n")


def read_superglue(argument: str, config: DataConfig) -> TaskData:
    folder = Path(argument).expanduser()
    name = _task_name(folder, {*SUPERGLUE, "copa"}, f"superglue:{argument}")
    splits = {}
    for split, stem in (("train", "train"), ("validation", "val")):
        rows = _jsonl_rows(folder / f"{stem}.jsonl")
        splits[split] = [_copa_record(row, origin) if name == "copa" else
                         _record(SUPERGLUE[name], row, origin) for origin, row in rows]
    splits["test"] = splits["validation"]
    return TaskData(splits, separator="\n\n")


def _record(task: GlueTask, row: Row, origin: str) -> Record:
    try:
        gold = task.gold(row)
        prompt = task.prompt(row)
        text = task.text(row)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise TunelabError(f"{origin}: unexpected row for this task ({type(err).__name__}: {err}); "
                           "is the folder the official download?") from None
    return choice_record(origin, prompt, list(task.choices), [gold], input=text, **{
        k: v for k, v in row.items() if isinstance(k, str) and k not in ("prompt", "choices")})


def _copa_record(row: Row, origin: str) -> Record:
    connector = {"cause": "because", "effect": "therefore"}.get(row.get("question", ""))
    if connector is None or row.get("label") not in (0, 1):
        raise TunelabError(f"{origin}: a COPA row needs question cause/effect and label 0 or 1")
    choices = [" " + _copa_choice(row["choice1"]), " " + _copa_choice(row["choice2"])]
    return choice_record(origin, row["premise"].strip()[:-1] + f" {connector}", choices,
                         [int(row["label"])], input=row["premise"])


def _tsv_rows(path: Path, columns: tuple[str, ...] | None) -> Iterator[tuple[str, Row]]:
    if not path.is_file():
        raise TunelabError(f"{path}: no such file; a GLUE folder holds train.tsv and dev.tsv")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = list(columns) if columns else next(reader)
        for values in reader:
            if not any(values):
                continue
            if len(values) < len(header):
                raise TunelabError(f"{path}:{reader.line_num}: {len(values)} columns, the header "
                                   f"has {len(header)}")
            yield f"{path}:{reader.line_num}", dict(zip(header, values, strict=False))


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Row]]:
    if not path.is_file():
        raise TunelabError(f"{path}: no such file; a SuperGLUE folder holds train.jsonl and val.jsonl")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as err:
                raise TunelabError(f"{path}:{lineno}: malformed JSON ({err.msg})") from None


class GlueSource(BenchmarkSource):
    """glue:DIR: a GLUE task folder."""

    name = "glue"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_glue(argument, config)


class SuperGlueSource(BenchmarkSource):
    """superglue:DIR: a SuperGLUE task folder."""

    name = "superglue"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_superglue(argument, config)

    def completion_format(self, source: str) -> str:
        if Path(self.argument(source)).name.lower() == "copa":
            return "{output}"  # COPA's choices carry their own leading space
        return self.completion
