"""The one seeded split (data/splits.py), for training data and evaluation data alike.

The expected orders were computed before the two former implementations (data/splits.py and
eval/datasets' seeded_splits) became one, through each of them, so they pin that the same seed
still gives the same records in the same order on both paths.
"""

from __future__ import annotations

import pytest
from eval_helpers import EVAL_DATA
from helpers import DATA

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data import load_splits
from tunelab.data.sources import read_records
from tunelab.data.splits import seeded_split
from tunelab.eval.datasets.bigbench import read_bigbench_file, read_squad_file

FIELDS = {"input": "text", "output": "label"}
# Line numbers (JSONL, CSV) of each split, in order, as the training path split them.
TRAINING_SPLITS = {
    "reviews.jsonl": (dict(validation_size=0.1, test_size=10, split_seed=3), {
        "train": [12, 22, 17, 20, 29, 34, 21, 13, 26, 25, 30, 40, 23, 7, 8, 18, 37, 39, 1, 5, 31,
                  24, 9, 35, 38, 16],
        "validation": [3, 2, 11, 33], "test": [6, 15, 19, 4, 27, 32, 28, 36, 14, 10]}),
    "reviews.csv": (dict(split_seed=0), {
        "train": [12, 15, 16, 39, 24, 41, 25, 19, 10, 37, 5, 35, 11, 6, 38, 8, 30, 20, 13, 32, 21,
                  27, 33, 34, 18, 4, 28, 26],
        "validation": [3, 22, 9, 7], "test": [2, 29, 14, 23, 31, 17, 40, 36]}),
    "alpaca.jsonl": (dict(validation_size=2, test_size=3, split_seed=7), {
        "train": [5, 10, 2, 1, 7, 3, 6], "validation": [11, 9], "test": [8, 12, 4]}),
}
# Example indices of each split, in order, as the evaluation path split them.
EVALUATION_SPLITS = {
    "general_knowledge_task.json": (dict(test_size=4, validation_size=1, split_seed=0), {
        "train": [3, 7, 6], "validation": [0], "test": [4, 1, 5, 2]}),
    "xsum_task.json": (dict(test_size=0.5, validation_size=0.2, split_seed=5), {
        "train": [2, 4], "validation": [5], "test": [1, 0, 3]}),
}


def _line(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])


@pytest.mark.parametrize("name", sorted(TRAINING_SPLITS))
def test_training_split_order_is_unchanged(name: str) -> None:
    options, expected = TRAINING_SPLITS[name]
    config = DataConfig(source=str(DATA / name), fields=FIELDS if "reviews" in name else {},
                        **options)
    splits = load_splits(config)
    assert {k: [_line(r.origin) for r in v] for k, v in splits.as_dict().items()} == expected
    # The evaluation path (no train split required) splits the same records identically.
    records = read_records(config.source, config.format, config.fields, config.instruction)
    again = seeded_split(records, config, config.source, require_train=False)
    assert {k: [r.origin for r in v] for k, v in again.as_dict().items()} == \
        {k: [r.origin for r in v] for k, v in splits.as_dict().items()}


@pytest.mark.parametrize("name", sorted(EVALUATION_SPLITS))
def test_evaluation_split_order_is_unchanged(name: str) -> None:
    options, expected = EVALUATION_SPLITS[name]
    data = read_bigbench_file(str(EVAL_DATA / "bigbench" / name), DataConfig(**options))
    assert {k: [int(r.origin.rsplit(" ", 1)[1]) for r in v] for k, v in data.splits.items()} == expected


def test_squad_split_order_is_unchanged() -> None:
    data = read_squad_file(str(EVAL_DATA / "squad_dev_tiny.json"),
                           DataConfig(test_size=3, validation_size=1, split_seed=2))
    assert {k: [r.input for r in v] for k, v in data.splits.items()} == {
        "train": ["What year was the Carolina Panthers franchise founded?",
                  "Which NFL team represented the AFC at Super Bowl 50?"],
        "validation": ["How many appearances have the Denver Broncos made in the Super Bowl?"],
        "test": ["Where did Super Bowl 50 take place?",
                 "Which Carolina Panthers player was named Most Valuable Player?",
                 "Which NFL team represented the NFC at Super Bowl 50?"]}


def test_split_guards_name_the_option() -> None:
    records = read_records(str(DATA / "alpaca.jsonl"))  # 12 records
    for option in ("test_size", "validation_size"):
        with pytest.raises(TunelabError, match=rf"^data.{option} -1: must be a number >= 0$"):
            seeded_split(records, DataConfig(**{option: -1}), "where", require_train=False)
    everything = DataConfig(test_size=10, validation_size=2)
    with pytest.raises(TunelabError, match="^where: 12 examples leave an empty train split with "
                                           "test_size=10 and validation_size=2; lower them$"):
        seeded_split(records, everything, "where")
    evaluation = seeded_split(records, everything, "where", require_train=False)
    assert (len(evaluation.train), len(evaluation.validation), len(evaluation.test)) == (0, 2, 10)
    with pytest.raises(TunelabError, match=r"^where: 12 examples are fewer than test_size=11 \+ "
                                           "validation_size=2; lower them$"):
        seeded_split(records, DataConfig(test_size=11, validation_size=2), "where",
                     require_train=False)
