"""A combined adapter (`tunelab combine`) against the single-task runs it came from: each run
on its own task's test items and the combined adapter on the same items, paired
(`eval/compare.py: paired_difference`), with what each option costs in parameters and bytes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.compare import PairedDifference, paired_difference, primary_key
from tunelab.eval.runner import EvalResult
from tunelab.eval.tables import format_table


@dataclass(frozen=True)
class AdapterSize:
    """One option's cost: the numbers in its adapter and the adapter's bytes on disk."""

    name: str
    """A source run's directory name, or 'combined (HOW)'."""
    tasks: list[str]
    parameters: int
    size_on_disk_bytes: int


@dataclass(frozen=True)
class AgainstSource:
    """The combined adapter minus one single-task run on that run's task (same items)."""

    task: str
    source: str
    """The single-task run's directory name."""
    difference: PairedDifference
    n: int

    def to_json(self) -> dict[str, object]:
        d = self.difference
        return {"task": self.task, "source": self.source, "key": d.key, "n": self.n,
                "single_task": d.before, "combined": d.after, "change": d.delta,
                "ci": list(d.ci), "p_value": d.p_value, "lower_is_better": d.lower_is_better}


def same_items(a: EvalResult, b: EvalResult) -> bool:
    """Whether two evaluations scored the same items in the same order."""
    def keys(result: EvalResult) -> list[tuple[object, object]]:
        return [(row.get("origin"), row.get("input")) for row in result.predictions]
    return keys(a) == keys(b)


def against_source(task: TaskConfig, source: str, single: EvalResult, combined: EvalResult
                   ) -> AgainstSource:
    """The paired change of the task's primary score from the single-task run to the combined
    adapter."""
    if not same_items(single, combined):
        raise TunelabError(f"task {task.name}: {source} and the combined adapter scored "
                           "different items; score both on the same test split")
    key = primary_key(task, combined)
    return AgainstSource(task.name, source, paired_difference(task, single, combined, key),
                         combined.n)


@dataclass
class CombineReport:
    """What `tunelab combine` found: per task, the combined adapter against the run that
    trained on it; per option, its size."""

    how: str
    rows: list[AgainstSource] = field(default_factory=list)
    sizes: list[AdapterSize] = field(default_factory=list)

    def table(self, markdown: bool = False) -> str:
        """Each task: the single-task run's score, the combined adapter's, the change with its
        95% CI and the p-value that the combined adapter is not better."""
        rows = []
        for row in self.rows:
            d = row.difference
            arrow = " (lower is better)" if d.lower_is_better else ""
            rows.append([row.task, f"{d.key}{arrow}", row.n, row.source, f"{d.before:.2f}",
                         f"{d.after:.2f}", f"{d.delta:+.2f} [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]",
                         f"{d.p_value:.3f}"])
        return format_table(["task", "score", "items", "single-task run", "single-task",
                             f"combined ({self.how})", "change [95% CI]", "p"], rows, markdown)

    def size_table(self, markdown: bool = False) -> str:
        return format_table(["adapter", "tasks", "parameters", "size on disk (bytes)"],
                            [[s.name, ", ".join(s.tasks), f"{s.parameters:,}",
                              f"{s.size_on_disk_bytes:,}"] for s in self.sizes], markdown)

    def to_json(self) -> dict[str, object]:
        return {"how": self.how, "against_sources": [r.to_json() for r in self.rows],
                "sizes": [asdict(s) for s in self.sizes]}
