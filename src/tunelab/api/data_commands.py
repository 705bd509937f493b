"""The Python API of `tunelab data inspect`, `data check` and `data fetch`: one function
per command, which the CLI calls."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.api.eval_commands import Printout
from tunelab.config import load_run_config
from tunelab.core.deferred import deferred

if TYPE_CHECKING:
    from tunelab.data import inspect as inspecting
    from tunelab.eval.datasets import fetch as fetching
    from tunelab.eval.datasets.fetch import FetchResult
    from tunelab.report import data_report
    from tunelab.workflows import data_check as checking
else:  # loaded by the command that uses them: `tunelab tasks list` needs none
    inspecting = deferred("tunelab.data.inspect")
    fetching = deferred("tunelab.eval.datasets.fetch")
    data_report = deferred("tunelab.report.data_report")
    checking = deferred("tunelab.workflows.data_check")


def data_inspect(config: str | Path, overrides: list[str] | None = None, count: int = 3,
                 split: str = "train") -> str:
    """`tunelab data inspect`: templated examples with the trained tokens marked, per task."""
    return inspecting.inspect_data(load_run_config(config, overrides), count, split)


def data_check(target: str | Path, overrides: Sequence[str] = (), against: Sequence[str] = (),
               fix: str | Path | None = None, out: str | Path | None = "data_check.json",
               threshold: float | None = None, label_errors: bool = True,
               fields: dict[str, str] | None = None) -> Printout:
    """`tunelab data check`: duplicates, near duplicates, 13-gram overlap and conflicting
    labels within and across the splits and every scored benchmark (and each `against` task),
    quality, likely label errors; `out`: data_check.json; `fix`: a copy without duplicates and
    leaked items; `fields`: a data file's column mapping (as data.fields). The Printout's data
    is data_check.json's content."""
    check = checking.data_check(target, overrides, against, fix, out, threshold, label_errors, fields)
    figures = check.to_json()
    return Printout(data_report.check_table(figures), figures)


def data_fetch(tasks: Sequence[str] | None = None, sdist: str | Path | None = None,
               every_task: bool = False) -> FetchResult:
    """`tunelab data fetch bigbench`: BIG-bench's task files into the cache, once."""
    return fetching.fetch_bigbench(list(tasks) if tasks is not None else None, sdist, every_task)
