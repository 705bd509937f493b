"""A tune directory as an object (`tunelab tune`): every path of a hyperparameter search.

    TUNE/study.sqlite     the Optuna study (the default storage): a killed tune resumes from it
    TUNE/space.yaml       the search space it was started with
    TUNE/trial-<n>/       one run directory per trial (RunDir); a killed trial's is set aside
    TUNE/final/           the best trial and the base baselines scored on test, once
    TUNE/tune.json, TUNE/report.html, TUNE/worker-<i>.log, TUNE/ask.lock
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.runs.run_dir import report_html


@dataclass(frozen=True)
class TuneDir:
    """`tunelab tune`: the study beside one run directory per trial, the best trial's test
    scoring and the results."""

    root: Path

    @property
    def study(self) -> Path:
        """The default Optuna storage (SQLite): a killed tune resumes from it."""
        return self.root / "study.sqlite"

    @property
    def space(self) -> Path:
        """A copy of the search space the tune was started with."""
        return self.root / "space.yaml"

    @property
    def data_check(self) -> Path:
        """Duplicates and leakage, checked once before the search (the only test read then)."""
        return self.root / "data_check.json"

    @property
    def results(self) -> Path:
        return self.root / "tune.json"

    @property
    def report_html(self) -> Path:
        return report_html(self.root)

    @property
    def final(self) -> Path:
        """The best trial's run and the base baselines scored on test, once (comparison.json
        and each system's evaluation)."""
        return self.root / "final"

    @property
    def ask_lock(self) -> Path:
        """Held while a worker counts the trials and asks for the next one."""
        return self.root / "ask.lock"

    def trial(self, number: int) -> Path:
        """The run directory of trial `number`."""
        return self.root / f"trial-{number}"

    def trials(self) -> list[Path]:
        """Every trial's run directory here (not those set aside)."""
        return sorted(p for p in self.root.glob("trial-*") if p.name[6:].isdigit())

    def worker_log(self, index: int) -> Path:
        """The output of worker process `index` (`--workers K`)."""
        return self.root / f"worker-{index}.log"

    def is_tune(self) -> bool:
        return self.results.is_file()
