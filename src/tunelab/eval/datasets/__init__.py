"""Evaluation data in the layouts benchmarks ship in, read into tunelab records.

    bigbench:TASK[/SUBTASK]   BIG-bench task.json (after `tunelab data fetch bigbench`),
                              bigbench:squad_shifts/squaddev (SQuAD v1.1 dev), bigbench:truthful_qa
    bigbench-file:PATH        a task.json file in BIG-bench's format anywhere
    squad:PATH                a SQuAD v1.1 JSON file
    mmlu:DIR[:SUBJECT,...]    MMLU's CSV layout: DIR/{dev,val,test}/SUBJECT_{dev,val,test}.csv
    glue:DIR                  a GLUE task folder (SST-2, CoLA, MRPC, QNLI, QQP, RTE, WNLI, MNLI)
    superglue:DIR             a SuperGLUE task folder (BoolQ, CB, COPA, RTE, WiC, WSC)

Every reader fills the same columns: `prompt` (the question as the benchmark's usual prompt
shows it), `output` (the gold answer text), `choices` and `gold` (choice indices) for
multiple-choice data, `targets` (all acceptable answers) for generated answers. A task file
whose data section names no template gets `template: format`, `prompt_format: '{prompt}'` and
the reader's completion format. Anything else (JSONL, CSV, Parquet, `datasets` folders,
builtin:NAME) is read by `tunelab.data`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tunelab.config import DataConfig, TaskConfig
from tunelab.data import load_splits
from tunelab.data.records import choice_record
from tunelab.eval.datasets import bigbench, glue, mmlu
from tunelab.eval.datasets.common import TaskData

__all__ = ["SCHEMES", "TaskData", "choice_record", "default_completion", "load_task_data",
           "source_scheme"]


READERS: dict[str, Callable[[str, DataConfig], TaskData]] = {
    "bigbench": bigbench.read_bigbench,
    "bigbench-file": bigbench.read_bigbench_file,
    "squad": bigbench.read_squad_file,
    "mmlu": mmlu.read_mmlu,
    "glue": glue.read_glue,
    "superglue": glue.read_superglue,
}
"""The reader of each evaluation-data scheme (the part of data.source before the colon)."""
SCHEMES = tuple(READERS)


def source_scheme(source: str) -> str | None:
    """The evaluation-data scheme of a data.source (None for files tunelab.data reads)."""
    scheme, sep, _ = source.partition(":")
    return scheme if sep and scheme in SCHEMES else None


def default_completion(source: str) -> str:
    """How a benchmark source appends an answer to its prompt: BIG-bench and SQuAD prompts end
    in "A: " (the space is the prompt's), the others in "Answer:" (the answer brings a space)."""
    scheme = source_scheme(source)
    if scheme in ("bigbench", "bigbench-file", "squad"):
        return "{output}"
    if scheme == "superglue" and Path(source.split(":", 1)[1]).name.lower() == "copa":
        return "{output}"  # COPA's choices carry their own leading space
    return " {output}"


def load_task_data(task: TaskConfig) -> TaskData:
    """The task's splits (and the source's preamble), from whichever reader its source needs."""
    scheme = source_scheme(task.data.source)
    if scheme is None:
        splits = load_splits(task.data)
        return TaskData({"train": splits.train, "validation": splits.validation,
                         "test": splits.test})
    return READERS[scheme](task.data.source.split(":", 1)[1], task.data)
