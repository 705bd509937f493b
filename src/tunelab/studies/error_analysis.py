"""Error analysis between two evaluations of the same items (`tunelab compare A B`).

    two evaluations (eval dirs or runs) -> items paired by origin (an error when the item sets
    differ) -> per item: right in A? right in B? -> fixed / broken / still wrong / still right,
    an exact McNemar test on fixed vs broken -> every prediction's error categories
    (categories.py) -> slices (label, input length, task of a mixture) -> side-by-side
    examples per group -> `--export`: the still-wrong and broken items in the training data's
    own columns, for the next iteration's data.

"Right" is the task metric's own per-item notion (`item_scores(...).right()`: a label's exact
match, ROUGE-L >= 50, ...), so a comparison means what the task's score means.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.core.labels import normalize_label
from tunelab.eval.compare import item_scores
from tunelab.eval.output_types import get_output_type
from tunelab.eval.runner import EvalResult, PredictionRow, read_result
from tunelab.eval.tables import format_table
from tunelab.runs import EvalDir, RunDir, StudyFiles, System
from tunelab.studies.error_categories import (
    CATEGORIES,
    ErrorCategory,
    ItemView,
    TaskContext,
    detect_errors,
)

TRANSITIONS = ("fixed", "broken", "still wrong", "still right")
"""(A right, B right): (no, yes) fixed, (yes, no) broken, (no, no) still wrong, (yes, yes)."""


def transition(a_right: bool, b_right: bool) -> str:
    return TRANSITIONS[{(False, True): 0, (True, False): 1, (False, False): 2,
                        (True, True): 3}[(a_right, b_right)]]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b fixed vs c broken at p = 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass
class TaskPair:
    """One task's two evaluations and, per side, the robustness run's per-item consistency."""

    task: TaskConfig
    a: EvalResult
    b: EvalResult
    consistency: tuple[dict[str, bool] | None, dict[str, bool] | None] = (None, None)


@dataclass
class PairedItem:
    key: str
    task: str
    index: int
    input: str
    reference: object
    """The gold answer: a text or a list of acceptable texts."""
    a: str
    b: str
    a_score: float
    b_score: float
    a_right: bool
    b_right: bool
    a_errors: list[str]
    b_errors: list[str]
    label: str | None = None
    """The reference's normalised label (label tasks), for the per-label slice."""
    columns: dict[str, object] = field(default_factory=dict, repr=False)
    """Extra row fields kept for the export (choices of a multiple-choice item)."""

    @property
    def transition(self) -> str:
        return transition(self.a_right, self.b_right)

    @property
    def words(self) -> int:
        return len(self.input.split())


@dataclass
class CategoryRow:
    category: str
    description: str
    a_errors: int
    """A's wrong predictions showing it."""
    b_errors: int
    a_all: int
    """All of A's predictions showing it (right ones too)."""
    b_all: int


@dataclass
class SliceRow:
    slice: str
    value: str
    n: int
    a_right: float
    b_right: float
    fixed: int
    broken: int
    p_value: float


@dataclass
class ComparisonReport:
    a_name: str
    b_name: str
    tasks: list[str]
    key: str
    items: list[PairedItem]
    categories: list[CategoryRow]
    slices: list[SliceRow]
    examples: int = 5

    @property
    def n(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        found = Counter(item.transition for item in self.items)
        return {t: found.get(t, 0) for t in TRANSITIONS}

    @property
    def p_value(self) -> float:
        counts = self.counts()
        return mcnemar_exact(counts["fixed"], counts["broken"])

    @property
    def a_right(self) -> float:
        """Percent of items A got right."""
        return 100.0 * sum(i.a_right for i in self.items) / self.n

    @property
    def b_right(self) -> float:
        return 100.0 * sum(i.b_right for i in self.items) / self.n

    def headline(self) -> str:
        c = self.counts()
        return (f"{self.a_name} -> {self.b_name} on {', '.join(self.tasks)} ({self.n} items, "
                f"right by {self.key}): {self.a_right:.1f}% -> {self.b_right:.1f}%; "
                f"fixed {c['fixed']}, broken {c['broken']}, still wrong {c['still wrong']}, "
                f"still right {c['still right']}; exact McNemar p={self.p_value:.4f}")

    def short_table(self) -> str:
        """The headline and the error categories that occur (the quickstart's last lines)."""
        rows = [[r.category, r.a_errors, r.b_errors] for r in self.categories
                if r.a_errors or r.b_errors]
        lines = [self.headline()]
        if rows:
            lines.append(format_table(["error (wrong predictions)", self.a_name, self.b_name],
                                      rows))
        return "\n".join(lines)

    def table(self, markdown: bool = False) -> str:
        c = self.counts()
        lines = [self.headline(), "",
                 format_table(["", "n", "share"], [[t, c[t], f"{100 * c[t] / self.n:.1f}%"]
                                                   for t in TRANSITIONS], markdown), "",
                 "error categories (count among wrong predictions; all predictions in brackets)",
                 format_table(["category", self.a_name, self.b_name, "what it counts"],
                              [[r.category, f"{r.a_errors} ({r.a_all})",
                                f"{r.b_errors} ({r.b_all})", r.description]
                               for r in self.categories], markdown)]
        if self.slices:
            lines += ["", "slices (percent right; fixed / broken; exact McNemar p)",
                      format_table(["slice", "value", "n", self.a_name, self.b_name, "fixed",
                                    "broken", "p"],
                                   [[s.slice, s.value, s.n, f"{s.a_right:.1f}",
                                     f"{s.b_right:.1f}", s.fixed, s.broken, f"{s.p_value:.3f}"]
                                    for s in self.slices], markdown)]
        for group in ("fixed", "broken", "still wrong"):
            chosen = [i for i in self.items if i.transition == group][:self.examples]
            if not chosen:
                continue
            lines += ["", f"{group} (first {len(chosen)} of {c[group]}):",
                      format_table(["#", "input", "reference", self.a_name, self.b_name,
                                    "errors"],
                                   [[i.index, clip(i.input), clip(reference_text(i.reference)),
                                     clip(i.a), clip(i.b),
                                     ", ".join(i.b_errors if not i.b_right else i.a_errors)]
                                    for i in chosen], markdown)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"a": self.a_name, "b": self.b_name, "tasks": self.tasks, "key": self.key,
                "n": self.n, "counts": self.counts(), "mcnemar_p": self.p_value,
                "a_right": self.a_right, "b_right": self.b_right,
                "categories": [asdict(r) for r in self.categories],
                "slices": [asdict(s) for s in self.slices],
                "items": [dict(asdict(i), transition=i.transition) for i in self.items]}


def clip(text: str, width: int = 70) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def reference_text(reference: object) -> str:
    return str(reference[0]) if isinstance(reference, list) and reference else str(reference)


def row_key(row: Mapping[str, object]) -> str:
    """An item's identity across evaluations: its origin, else its position."""
    return str(row.get("origin") or row["index"])


def context_of(task: TaskConfig, consistency: dict[str, bool] | None) -> TaskContext:
    labels = tuple(normalize_label(str(label)) for label in task.eval.labels or ())
    return TaskContext(get_output_type(task.output_type).free_text, labels,
                       consistency is not None)


def paired_items(pair: TaskPair) -> tuple[str, list[PairedItem]]:
    """(score key, items) of one task, paired by origin; an error when the items differ."""
    a_rows, b_rows = pair.a.predictions, pair.b.predictions
    a_keys, b_keys = [row_key(r) for r in a_rows], [row_key(r) for r in b_rows]
    if len(set(a_keys)) != len(a_keys):  # origins repeat (one file scored twice): by position
        a_keys, b_keys = [str(r["index"]) for r in a_rows], [str(r["index"]) for r in b_rows]
    if set(a_keys) != set(b_keys):
        only_a = [k for k in a_keys if k not in set(b_keys)]
        only_b = [k for k in b_keys if k not in set(a_keys)]
        first = (only_a or only_b)[0]
        raise TunelabError(
            f"{pair.task.name}: A and B scored different items ({len(only_a)} only in A, "
            f"{len(only_b)} only in B, e.g. {first}); compare two evaluations of the same "
            "split and --limit")
    a_scores, b_scores = item_scores(pair.task, pair.a), item_scores(pair.task, pair.b)
    a_right, b_right = a_scores.right(), b_scores.right()
    b_at = {k: i for i, k in enumerate(b_keys)}
    contexts = [context_of(pair.task, c) for c in pair.consistency]
    labelled = bool(contexts[0].labels)
    items = []
    for i, key in enumerate(a_keys):
        j = b_at[key]
        ra, rb = a_rows[i], b_rows[j]
        views = [view(row, side_consistency, key) for row, side_consistency
                 in ((ra, pair.consistency[0]), (rb, pair.consistency[1]))]
        items.append(PairedItem(
            key, pair.task.name, int(ra["index"]), str(ra.get("input", "")), ra["reference"],
            str(ra["prediction"]), str(rb["prediction"]), a_scores.values[i],
            b_scores.values[j], a_right[i], b_right[j],
            detect_errors(views[0], contexts[0]), detect_errors(views[1], contexts[1]),
            normalize_label(reference_text(ra["reference"])) if labelled else None,
            {k: ra[k] for k in ("choices",) if k in ra}))
    return a_scores.key, items


def view(row: PredictionRow, consistency: dict[str, bool] | None, key: str) -> ItemView:
    return ItemView(str(row["prediction"]), row["reference"], str(row.get("input", "")),
                    bool(row.get("hit_max_new_tokens", False)),
                    None if consistency is None else consistency.get(key))


def compare_tasks(pairs: Sequence[TaskPair], names: tuple[str, str] | None = None,
                  examples: int = 5) -> ComparisonReport:
    """Every task's items paired, transitions, categories and slices; see the module
    docstring. `names` label the two sides (default: the systems' names)."""
    if not pairs:
        raise TunelabError("compare: nothing to compare")
    keys, items = set(), []
    for pair in pairs:
        key, found = paired_items(pair)
        keys.add(key)
        items += found
    a_name, b_name = names or side_names(pairs[0].a.system.label, pairs[0].b.system.label)
    contexts = [context_of(p.task, c) for p in pairs for c in p.consistency]
    applicable = [c for c in CATEGORIES if any(c.applies(x) for x in contexts)]
    report = ComparisonReport(a_name, b_name, [p.task.name for p in pairs], "/".join(sorted(keys)),
                              items, category_rows(items, applicable), [], examples)
    report.slices = slice_rows(items, len(pairs) > 1)
    return report


def compare_results(task: TaskConfig, a: EvalResult, b: EvalResult,
                    consistency: tuple[dict[str, bool] | None, dict[str, bool] | None] = (None,
                                                                                        None),
                    names: tuple[str, str] | None = None, examples: int = 5) -> ComparisonReport:
    """One task's two evaluations compared (see `compare_tasks`)."""
    return compare_tasks([TaskPair(task, a, b, consistency)], names, examples)


def side_names(a: str, b: str) -> tuple[str, str]:
    """The two systems' names, told apart when they are the same ('fine-tuned' twice)."""
    return (a or "A", b or "B") if a != b else (f"A: {a}", f"B: {b}")


def category_rows(items: Sequence[PairedItem], categories: Sequence[ErrorCategory]
                  ) -> list[CategoryRow]:
    rows = []
    for category in categories:
        name = category.name
        rows.append(CategoryRow(
            name, category.description,
            sum(name in i.a_errors for i in items if not i.a_right),
            sum(name in i.b_errors for i in items if not i.b_right),
            sum(name in i.a_errors for i in items), sum(name in i.b_errors for i in items)))
    return rows


def slice_rows(items: Sequence[PairedItem], by_task: bool) -> list[SliceRow]:
    """Per label (label tasks), per input-length third, and per task when several."""
    groups: list[tuple[str, str, list[PairedItem]]] = []
    if by_task:
        groups += [("task", t, [i for i in items if i.task == t])
                   for t in dict.fromkeys(i.task for i in items)]
    labels = sorted({i.label for i in items if i.label is not None})
    groups += [("label", label, [i for i in items if i.label == label]) for label in labels]
    groups += length_buckets(items)
    return [slice_row(kind, value, members) for kind, value, members in groups if members]


def length_buckets(items: Sequence[PairedItem]) -> list[tuple[str, str, list[PairedItem]]]:
    """Input length in words, cut at its thirds (fewer buckets when lengths repeat)."""
    lengths = sorted(i.words for i in items)
    if len(set(lengths)) < 2:
        return []
    cuts = sorted({lengths[len(lengths) // 3], lengths[2 * len(lengths) // 3]})
    bounds: list[tuple[int, int | None]] = []
    low = lengths[0]
    for cut in cuts:
        if cut >= low:
            bounds.append((low, cut))
            low = cut + 1
    bounds.append((low, None))
    out = []
    for low, high in bounds:
        members = [i for i in items if i.words >= low and (high is None or i.words <= high)]
        name = f"{low}-{high} words" if high is not None else f">= {low} words"
        out.append(("input length", name, members))
    return out


def slice_row(kind: str, value: str, members: Sequence[PairedItem]) -> SliceRow:
    counts = Counter(i.transition for i in members)
    return SliceRow(kind, value, len(members), 100.0 * sum(i.a_right for i in members) / len(members),
                    100.0 * sum(i.b_right for i in members) / len(members), counts["fixed"],
                    counts["broken"], mcnemar_exact(counts["fixed"], counts["broken"]))


# ---- Directories and files ---------------------------------------------------------------

def eval_dirs(path: str | Path) -> dict[str, Path]:
    """task name -> eval dir for an eval dir, a run (its fine-tuned evaluation; one per task
    for a mixture) or a directory of per-task eval dirs."""
    folder = Path(path)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such directory; give a run directory or an eval "
                           "directory (metrics.json + predictions.jsonl)")
    run = RunDir(folder)
    inner = run.eval_dir(System.tuned()) if run.is_run() else EvalDir(folder)
    found = {read_task_name(d): d.root for d in inner.evaluations()}
    if not found:
        raise TunelabError(f"{folder}: holds no evaluation (no metrics.json in it, in "
                           f"{inner.root} or in its subdirectories); evaluate it first "
                           "(tunelab eval --out DIR)")
    return found


def read_task_name(folder: EvalDir) -> str:
    try:
        return str(json.loads(folder.metrics.read_text(encoding="utf-8"))["task"])
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
        raise TunelabError(f"{folder.metrics}: not a tunelab metrics.json (no task); "
                           "evaluate again") from None


def read_consistency(robustness: StudyFiles, systems: Sequence[System]) -> dict[str, bool] | None:
    """item key -> whether its prediction changed under noise, from a robustness run's
    <system>/consistency.jsonl for the first of `systems` (the names one system may have
    there) it scored (None: it scored none of them)."""
    paths = [robustness.consistency(s) for s in systems]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {str(r["key"]): bool(r["changed"]) for r in rows}


def results_of(path: str | Path) -> dict[str, EvalResult]:
    return {name: read_result(folder) for name, folder in eval_dirs(path).items()}


def export_errors(report: ComparisonReport, tasks: Mapping[str, TaskConfig],
                  path: str | Path) -> int:
    """Write the still-wrong and broken items as training records: the input and the reference
    in the task data's own column names (data.fields), B's prediction and the diagnosis in
    tunelab_* columns the loader keeps but does not train on. Returns the rows written."""
    out = Path(path)
    if out.exists():
        raise TunelabError(f"--export {out}: exists; choose a new file (nothing was written)")
    if not out.parent.is_dir():
        raise TunelabError(f"--export {out}: no directory {out.parent}; create it first")
    rows = []
    for item in report.items:
        if item.b_right:  # only B's errors: still wrong and broken
            continue
        fields = tasks[item.task].data.fields
        rows.append({fields.get("input", "input"): item.input,
                     fields.get("output", "output"): reference_text(item.reference),
                     **item.columns,
                     "tunelab_origin": item.key, "tunelab_task": item.task,
                     "tunelab_transition": item.transition, "tunelab_prediction": item.b,
                     "tunelab_errors": ",".join(item.b_errors)})
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
    partial.replace(out)
    return len(rows)
