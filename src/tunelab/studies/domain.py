"""Domain adaptation: a run on raw documents (data.template text) scored on its held-out
documents by the base model before training and by the fine-tune after, paired per document.

The run's evaluation task of such a task is loglikelihood_rolling over its test split (the
template kind says so, `data/templates.py: TextKind.evaluation`); here the base model scores
the same documents before the method touches it, and each score's change gets the paired
bootstrap of eval/compare.py (documents resampled; perplexity is exp(sum NLL / sum tokens) of
each resample, never a mean of per-document perplexities). The rows go to summary.json
(`domain`), which report.md and report.html read, next to the forgetting table of the
retention suite (what the same run cost on general text and tasks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tunelab.config import TaskConfig
from tunelab.data.templates import get_template_kind
from tunelab.eval.compare import PairedDifference, paired_difference, primary_key
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.eval.tables import format_table
from tunelab.models import LoadedModel
from tunelab.runs import RunDir, System


@dataclass
class DomainRow:
    """One score of one task's held-out documents, before and after training."""

    task: str
    n: int
    """Documents scored (the same ones before and after)."""
    change: PairedDifference
    """The score before and after, its paired 95% CI and p (small: significantly better)."""

    def to_json(self) -> dict[str, object]:
        return {"task": self.task, "n": self.n, **asdict(self.change),
                "delta": self.change.delta, "relative_change": self.change.relative_change}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DomainRow:  # Any: summary.json's values
        change = PairedDifference(
            data["key"], data.get("metric", data["key"]), float(data["before"]),
            float(data["after"]), (float(data["ci"][0]), float(data["ci"][1])),
            float(data["p_value"]), bool(data["lower_is_better"]))
        return cls(data["task"], int(data["n"]), change)


def document_tasks(evaluated: Mapping[str, TaskConfig]) -> dict[str, TaskConfig]:
    """The run's evaluation tasks over raw documents (their template kind trains documents)."""
    return {name: task for name, task in evaluated.items()
            if get_template_kind(task.data.template).trains_documents}


def score(lm: LoadedModel, tasks: Mapping[str, TaskConfig], limit: int | None,
          system: System) -> dict[str, EvalResult]:
    """Each task's held-out documents scored by `lm` (the first `limit` when set: eval.limit,
    as the run's own evaluation after training takes them)."""
    return {name: evaluate_loaded(lm, task, system, shots=0, limit=limit or task.eval.limit)
            for name, task in tasks.items()}


def compare(before: Mapping[str, EvalResult], after: Mapping[str, EvalResult],
            tasks: Mapping[str, TaskConfig]) -> list[DomainRow]:
    """A row per task and document score (its eval.metrics that are scores of the result, e.g.
    perplexity, bits_per_byte, word_perplexity; else its primary score): before, after, the
    paired 95% CI and p. A task scored only on one side has no row."""
    rows = []
    for name, task in tasks.items():
        if name not in before or name not in after:
            continue
        b, a = before[name], after[name]
        keys = [k for k in task.eval.metrics if k in a.scores] or [primary_key(task, a)]
        for key in keys:
            rows.append(DomainRow(name, a.n, paired_difference(task, b, a, key)))
    return rows


def write_before(run: RunDir, before: Mapping[str, EvalResult], per_task: bool) -> None:
    """The base model's evaluations beside the fine-tune's: eval/<base>/ (a mixture:
    eval/<base>/<task>/), so report, compare and the baselines section pair them."""
    out = run.eval_dir(System.base())
    for name, result in before.items():
        write_result(result, out.task(name) if per_task else out)


def shown(value: float, sign: str = "") -> str:
    """A score as the tables show it: 3 decimals, whole numbers from 10,000 (word perplexity
    of a small model runs into millions)."""
    return f"{value:{sign},.0f}" if abs(value) >= 1e4 else f"{value:{sign}.3f}"


def change_cell(change: PairedDifference) -> str:
    """'change [low, high]' of a paired difference."""
    low, high = change.ci
    return f"{shown(change.delta, '+')} [{shown(low, '+')}, {shown(high, '+')}]"


def domain_table(rows: Sequence[DomainRow], markdown: bool = False) -> str:
    """Before, after, change [95% CI], relative change and p of every row."""
    body = [[r.task, r.change.key + (" (lower is better)" if r.change.lower_is_better else ""),
             r.n, shown(r.change.before), shown(r.change.after), change_cell(r.change),
             f"{r.change.relative_change:+.1f}%", f"{r.change.p_value:.4f}"] for r in rows]
    return format_table(["task", "score", "documents", "before", "after", "change [95% CI]",
                         "relative", "p (not better)"], body, markdown)


def rows_of(summary: Mapping[str, Any]) -> list[DomainRow]:  # Any: summary.json's values
    """The domain rows a run's summary.json holds (none for other runs)."""
    return [DomainRow.from_json(r) for r in summary.get("domain", {}).get("rows", [])]


def summary_entry(rows: Sequence[DomainRow]) -> dict[str, object]:
    """summary.json's `domain`: the rows, and which tasks got significantly better."""
    better = sorted({r.task for r in rows if r.change.significantly_better})
    return {"rows": [r.to_json() for r in rows], "significantly_better": better}
