"""Seeded train/validation/test splits, or given split files."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunelab.config import DataConfig
from tunelab.data.records import Record
from tunelab.data.sources import read_records
from tunelab.errors import TunelabError


@dataclass
class Splits:
    train: list[Record]
    validation: list[Record]
    test: list[Record]

    def get(self, name: str) -> list[Record]:
        if name not in ("train", "validation", "test"):
            raise TunelabError(f"split '{name}': use train, validation or test")
        return getattr(self, name)


def _count(size: float, total: int, option: str) -> int:
    if size < 0:
        raise TunelabError(f"data.{option}={size}: must be >= 0")
    count = int(round(size * total)) if size < 1 else int(size)
    return count


def load_splits(config: DataConfig) -> Splits:
    """Read the data and split it (seeded shuffle), or read the given split files."""
    def read(source: str) -> list[Record]:
        return read_records(source, config.format, config.fields, config.instruction)

    if config.train_file:
        train = read(config.train_file)
        validation = read(config.validation_file) if config.validation_file else []
        test = read(config.test_file) if config.test_file else []
        return Splits(train, validation, test)
    records = read(config.source)
    order = list(range(len(records)))
    random.Random(config.split_seed).shuffle(order)
    n_test = _count(config.test_size, len(records), "test_size")
    n_val = _count(config.validation_size, len(records), "validation_size")
    if n_test + n_val >= len(records):
        raise TunelabError(
            f"{config.source}: {len(records)} examples leave an empty train split with "
            f"test_size={config.test_size} and validation_size={config.validation_size}; lower them"
        )
    shuffled = [records[i] for i in order]
    return Splits(
        train=shuffled[n_test + n_val:],
        validation=shuffled[n_test:n_test + n_val],
        test=shuffled[:n_test],
    )
