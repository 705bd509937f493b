"""MMLU's CSV layout (Hendrycks et al., the `data.tar` release).

    DIR/dev/SUBJECT_dev.csv    5 examples per subject: the few-shot pool (split `train`)
    DIR/val/SUBJECT_val.csv    split `validation`
    DIR/test/SUBJECT_test.csv  split `test`

Each CSV has no header and six columns: question, the four options A-D, the answer letter.
The prompt is lm-evaluation-harness's: the question, the options as "A. ...", then "Answer:";
the choices are the letters, scored as " A", " B", ... With one subject the preamble is
"The following are multiple choice questions (with answers) about SUBJECT.\\n\\n".
Source: mmlu:DIR (every subject) or mmlu:DIR:SUBJECT[,SUBJECT...].
"""

from __future__ import annotations

import csv
from pathlib import Path

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data import Record, TaskData
from tunelab.data.records import choice_record
from tunelab.eval.datasets.common import BenchmarkSource

LETTERS = ["A", "B", "C", "D"]
SPLIT_DIRS = {"train": "dev", "validation": "val", "test": "test"}


def _split_source(argument: str) -> tuple[Path, list[str] | None]:
    if Path(argument).expanduser().exists() or ":" not in argument:
        return Path(argument).expanduser(), None
    path, _, subjects = argument.rpartition(":")
    wanted = [s.strip() for s in subjects.split(",") if s.strip()] or None
    return Path(path).expanduser(), wanted


def read_mmlu(argument: str, config: DataConfig) -> TaskData:
    root, wanted = _split_source(argument)
    if not root.is_dir():
        raise TunelabError(f"data.source 'mmlu:{argument}': {root} is not a folder holding "
                           "dev/, val/ and test/ CSV folders")
    available = sorted(p.name[:-len("_test.csv")] for p in (root / "test").glob("*_test.csv"))
    if not available:
        raise TunelabError(f"{root / 'test'}: no SUBJECT_test.csv files; is this MMLU's data folder?")
    subjects = wanted or available
    unknown = [s for s in subjects if s not in available]
    if unknown:
        raise TunelabError(f"data.source 'mmlu:{argument}': unknown subject '{unknown[0]}'; "
                           f"{root} has {', '.join(available[:8])}{' ...' if len(available) > 8 else ''}")
    splits: dict[str, list[Record]] = {}
    for split, folder in SPLIT_DIRS.items():
        splits[split] = []
        for subject in subjects:
            path = root / folder / f"{subject}_{folder}.csv"
            if path.is_file():
                splits[split] += _read_csv(path, subject)
    preamble = ""
    if len(subjects) == 1:
        preamble = ("The following are multiple choice questions (with answers) about "
                    f"{subjects[0].replace('_', ' ')}.\n\n")
    return TaskData(splits, preamble=preamble, separator="\n\n")


def _read_csv(path: Path, subject: str) -> list[Record]:
    records = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for row in reader:
            origin = f"{path}:{reader.line_num}"
            if len(row) != 6:
                raise TunelabError(f"{origin}: expected 6 columns (question, A, B, C, D, answer), "
                                   f"got {len(row)}")
            question, *options, answer = (cell.strip() for cell in row)
            if answer not in LETTERS:
                raise TunelabError(f"{origin}: answer '{answer}' is not one of A, B, C, D")
            shown = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options, strict=True))
            records.append(choice_record(
                origin, f"{question}\n{shown}\nAnswer:", list(LETTERS), [LETTERS.index(answer)],
                input=question, subject=subject, options=options))
    return records


class MmluSource(BenchmarkSource):
    """mmlu:DIR[:SUBJECT,...]: MMLU's CSV layout."""

    name = "mmlu"

    def read_argument(self, argument: str, config: DataConfig) -> TaskData:
        return read_mmlu(argument, config)
