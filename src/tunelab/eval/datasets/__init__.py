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
the reader's completion format. Each layout is a `BenchmarkSource` registered here with
`tunelab.data.sources`, the one registry of data.source schemes; anything else (JSONL, CSV,
Parquet, `datasets` folders, builtin:NAME) is read by `tunelab.data`.
"""

from __future__ import annotations

from tunelab.config import TaskConfig
from tunelab.data import TaskData, read_source
from tunelab.data.records import choice_record
from tunelab.data.sources import register_scheme
from tunelab.eval.datasets import bigbench, glue, mmlu
from tunelab.eval.datasets.common import BenchmarkSource

__all__ = ["BENCHMARKS", "BenchmarkSource", "TaskData", "choice_record", "load_task_data"]


BENCHMARKS = (bigbench.BigbenchSource(), bigbench.BigbenchFileSource(), bigbench.SquadSource(),
              mmlu.MmluSource(), glue.GlueSource(), glue.SuperGlueSource())
"""The benchmark schemes, registered with data.source's one registry (`tunelab.data.sources`)
when this package is imported."""
for _scheme in BENCHMARKS:
    register_scheme(_scheme)


def load_task_data(task: TaskConfig) -> TaskData:
    """The task's splits (and the source's preamble), from whichever reader its source needs
    (`eval/tasks.py: read_task` reads and checks a task for scoring)."""
    return read_source(task.data)
