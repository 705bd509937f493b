"""The export check: every exported artefact against the fine-tune it came from, on the same
test items, with paired statistics (eval/compare.py).

An artefact is called good only after the engine that serves it has scored it: its score next
to the fine-tune's, the paired difference with its 95% bootstrap interval, how many items got
a different prediction, its size on disk and its decoding speed beside tunelab's own. A drop
beyond `--max-drop` points fails the export (exit 1) with the report written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunelab.core.errors import TunelabError
from tunelab.eval.compare import PairedDifference
from tunelab.eval.runner import EvalResult


class ExportDropError(TunelabError):
    """An exported artefact scored more than --max-drop points below the fine-tune: the
    export and its report are written, the command exits 1 (the input was valid, the check
    failed)."""

    exit_code = 1

    def __init__(self, message: str, check: ExportCheck | None = None) -> None:
        super().__init__(message)
        self.check = check


def changed_predictions(before: EvalResult, after: EvalResult) -> int:
    """Items whose prediction differs (text compared as written, whitespace trimmed)."""
    return sum(str(a.get("prediction")).strip() != str(b.get("prediction")).strip()
               for a, b in zip(before.predictions, after.predictions, strict=True))


@dataclass
class FormatCheck:
    """One artefact's result."""

    label: str
    engine: str
    artefact: str
    size_bytes: int
    score: float
    delta: float
    ci: tuple[float, float]
    p_value: float
    changed: int
    n: int
    tokens_per_s: float | None
    """None: the model writes no text (a classifier)."""
    lower_is_better: bool = False
    note: str = ""
    """What the writer could not do as asked (llama.cpp's quantiser fallbacks)."""

    @classmethod
    def of(cls, label: str, engine: str, artefact: str, size: int, difference: PairedDifference,
           changed: int, n: int, tokens_per_s: float | None, note: str = "") -> FormatCheck:
        return cls(label, engine, artefact, size, difference.after, difference.delta,
                   (float(difference.ci[0]), float(difference.ci[1])), difference.p_value,
                   changed, n, tokens_per_s, difference.lower_is_better, note)

    @property
    def drop(self) -> float:
        """Points lost against the fine-tune (negative: it scored better)."""
        return self.delta if self.lower_is_better else -self.delta


@dataclass
class ExportCheck:
    run: str
    task: str
    key: str
    """The score compared (the task's primary score)."""
    n: int
    tuned_score: float
    tuned_tokens_per_s: float | None
    cpu_threads: int
    formats: list[FormatCheck] = field(default_factory=list)
    max_drop: float | None = None

    def failed(self) -> list[FormatCheck]:
        if self.max_drop is None:
            return []
        return [f for f in self.formats if f.drop > self.max_drop]

    def verdict(self, check: FormatCheck) -> str:
        if self.max_drop is None:
            return "-"
        return "FAIL" if check in self.failed() else "pass"

    def table(self) -> str:
        """The markdown table the command prints and export.md holds."""
        head = (f"Export check of run {self.run} on {self.n} test items of {self.task} "
                f"({self.key}; paired bootstrap, 1000 resamples; speed: {self.cpu_threads} "
                "threads, one prompt at a time)")
        rows = [
            "| system | engine | score | vs fine-tune [95% CI] | changed | size | tokens/s | check |",
            "|---|---|---:|---:|---:|---:|---:|---|",
            f"| fine-tune | transformers | {self.tuned_score:.2f} | | | | "
            f"{_rate(self.tuned_tokens_per_s)} | |",
        ]
        for f in self.formats:
            rows.append(
                f"| {f.label} | {f.engine} | {f.score:.2f} | {f.delta:+.2f} [{f.ci[0]:+.2f}, "
                f"{f.ci[1]:+.2f}] | {f.changed}/{f.n} | {f.size_bytes / 2**20:.1f} MiB | "
                f"{_rate(f.tokens_per_s)} | {self.verdict(f)} |")
        lines = [head, "", *rows]
        notes = [f"- {f.label}: {f.note}" for f in self.formats if f.note]
        if notes:
            lines += ["", *notes]
        if self.max_drop is not None:
            failed = self.failed()
            lines += ["", (f"FAILED: {', '.join(f.label for f in failed)} dropped more than "
                           f"{self.max_drop:g} points" if failed else
                           f"passed: no artefact dropped more than {self.max_drop:g} points")]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["failed"] = [f.label for f in self.failed()]
        return data


def _rate(tokens_per_s: float | None) -> str:
    """A decoding speed for the table; '-' for a model that writes no text."""
    return "-" if tokens_per_s is None else f"{tokens_per_s:.1f}"
