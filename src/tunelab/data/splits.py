"""Seeded train/validation/test splits, and what a data source reads into (`TaskData`).

`seeded_split` is the one seeded split: training data (`sources.load_splits`) and evaluation
data (the benchmark readers of `tunelab.eval.datasets`) both use it, so the same seed gives the
same items everywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn, overload

from tunelab.config import DataConfig
from tunelab.core.errors import TunelabError
from tunelab.data.records import Record


class SealedSplit(Sequence[Record]):
    """A split that must not be read (the test split while hyperparameters are searched):
    any access (len, iteration, an index, truth) raises a TunelabError saying why."""

    def __init__(self, why: str):
        self.why = why

    def _refuse(self) -> NoReturn:
        raise TunelabError(self.why)

    def __len__(self) -> int:
        self._refuse()

    def __iter__(self) -> Iterator[Record]:
        self._refuse()

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | Sequence[Record]:
        self._refuse()

    def __repr__(self) -> str:
        return "SealedSplit()"


@dataclass
class Splits:
    train: list[Record]
    validation: list[Record]
    test: list[Record] | SealedSplit
    """A `SealedSplit` when the run reads train and validation only (`load_splits`)."""

    def get(self, name: str) -> list[Record]:
        if name not in ("train", "validation", "test"):
            raise TunelabError(f"split '{name}': use train, validation or test")
        split: list[Record] | SealedSplit = getattr(self, name)
        if isinstance(split, SealedSplit):
            split._refuse()
        return split

    def as_dict(self) -> dict[str, list[Record]]:
        """{"train": ..., "validation": ..., "test": ...} (the same lists, not copies); a
        sealed test split is left out."""
        splits = {"train": self.train, "validation": self.validation}
        if not isinstance(self.test, SealedSplit):
            splits["test"] = self.test
        return splits

    def sealed(self, why: str) -> Splits:
        """The same train and validation splits, the test split sealed (`SealedSplit`)."""
        return replace(self, test=SealedSplit(why))


@dataclass
class TaskData:
    """A data source's splits by name, as an evaluation task reads them (`SourceScheme.read`),
    with the text the source puts around its examples."""

    splits: dict[str, list[Record]]
    preamble: str = ""
    """Text the source puts once before the examples (BIG-bench's task_prefix)."""
    separator: str | None = None
    """The source's own text between in-context examples."""

    def split(self, name: str, option: str = "split") -> list[Record]:
        if name not in self.splits:
            raise TunelabError(
                f"{option} '{name}': this data has splits {', '.join(self.splits)}; choose one"
            )
        return self.splits[name]


def split_count(size: float, total: int, option: str) -> int:
    """How many of `total` records data.<option> asks for: a fraction below 1, else a count."""
    if size < 0:
        raise TunelabError(f"data.{option}={size}: must be >= 0")
    return int(round(size * total)) if size < 1 else int(size)


def seeded_split(records: list[Record], config: DataConfig, where: str, *,
                 require_train: bool = True) -> Splits:
    """test, validation and train (in that order) from one seeded shuffle of `records`.

    Sizes are data.test_size and data.validation_size. Training needs a train split
    (`require_train`); an evaluation task may put every record in test or validation, but not
    ask for more records than there are. Errors name `where` and the options.
    """
    order = list(range(len(records)))
    random.Random(config.split_seed).shuffle(order)
    n_test = split_count(config.test_size, len(records), "test_size")
    n_val = split_count(config.validation_size, len(records), "validation_size")
    if require_train and n_test + n_val >= len(records):
        raise TunelabError(
            f"{where}: {len(records)} examples leave an empty train split with "
            f"test_size={config.test_size:g} and validation_size={config.validation_size:g}; lower them"
        )
    if n_test + n_val > len(records):
        raise TunelabError(
            f"{where}: {len(records)} examples are fewer than test_size={config.test_size:g} + "
            f"validation_size={config.validation_size:g}; lower them"
        )
    shuffled = [records[i] for i in order]
    return Splits(
        train=shuffled[n_test + n_val:],
        validation=shuffled[n_test:n_test + n_val],
        test=shuffled[:n_test],
    )

