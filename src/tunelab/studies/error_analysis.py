"""Error analysis between two evaluations of the same items (`tunelab compare A B`).

    two evaluations (eval dirs or runs) -> items paired by origin (an error when the item sets
    differ) -> per item: right in A? right in B? -> fixed / broken / still wrong / still right,
    an exact McNemar test on fixed vs broken -> every prediction's error categories
    (categories.py) -> slices (label, input length, task of a mixture) -> side-by-side
    examples per group -> `--export`: the still-wrong and broken items in the training data's
    own columns, for the next iteration's data.

"Right" is the task metric's own per-item notion (`item_scores(...).judged()`: a label's exact
match), so a comparison means what the task's score means. A graded score (ROUGE, BLEU, chrF,
token F1: `Metric.continuous_items`) has no line of right anyone chose: its items are ranked
by the paired difference B - A instead (score_shift.py: most improved, most worsened, the
mean difference with a bootstrap CI, the Wilcoxon signed-rank test) and `--export` writes B's
worst items; a line the user sets (`--pass X`, on the score's own scale) brings back the
transitions above.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.core.labels import normalize_label
from tunelab.eval.compare import item_scores
from tunelab.eval.output_types import get_output_type
from tunelab.eval.runner import EvalResult, PredictionRow, read_result
from tunelab.runs import EvalDir, RunDir, StudyFiles, System
from tunelab.studies.comparison_report import (
    TRANSITIONS,
    CategoryRow,
    ComparisonReport,
    PairedItem,
    ShiftRow,
    SliceRow,
    clip,
    mcnemar_exact,
    reference_text,
    transition,
)
from tunelab.studies.error_categories import (
    CATEGORIES,
    ErrorCategory,
    ItemView,
    TaskContext,
    detect_errors,
)
from tunelab.studies.score_shift import ScoreShift, score_shift

__all__ = ["TRANSITIONS", "CategoryRow", "ComparisonReport", "PairedItem", "ShiftRow",
           "SliceRow", "TaskPair", "clip", "compare_results", "compare_tasks", "eval_dirs",
           "export_errors", "mcnemar_exact", "paired_items", "read_consistency",
           "reference_text", "results_of", "row_key", "transition"]


@dataclass
class TaskPair:
    """One task's two evaluations and, per side, the robustness run's per-item consistency."""

    task: TaskConfig
    a: EvalResult
    b: EvalResult
    consistency: tuple[dict[str, bool] | None, dict[str, bool] | None] = (None, None)


def row_key(row: Mapping[str, object]) -> str:
    """An item's identity across evaluations: its origin, else its position."""
    return str(row.get("origin") or row["index"])


def context_of(task: TaskConfig, consistency: dict[str, bool] | None) -> TaskContext:
    labels = tuple(normalize_label(str(label)) for label in task.eval.labels or ())
    return TaskContext(get_output_type(task.output_type).free_text, labels,
                       consistency is not None)


def paired_items(pair: TaskPair, pass_at: float | None = None) -> tuple[str, list[PairedItem]]:
    """(score key, items) of one task, paired by origin; an error when the items differ.
    `pass_at`: the line of right for a graded score (None: its items are not judged)."""
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
    a_right, b_right = a_scores.judged(pass_at), b_scores.judged(pass_at)
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
            b_scores.values[j], None if a_right is None else a_right[i],
            None if b_right is None else b_right[j],
            detect_errors(views[0], contexts[0]), detect_errors(views[1], contexts[1]),
            normalize_label(reference_text(ra["reference"])) if labelled else None,
            {k: ra[k] for k in ("choices",) if k in ra}, a_scores.continuous,
            a_scores.lower_is_better))
    return a_scores.key, items


def view(row: PredictionRow, consistency: dict[str, bool] | None, key: str) -> ItemView:
    return ItemView(str(row["prediction"]), row["reference"], str(row.get("input", "")),
                    bool(row.get("hit_max_new_tokens", False)),
                    None if consistency is None else consistency.get(key))


def compare_tasks(pairs: Sequence[TaskPair], names: tuple[str, str] | None = None,
                  examples: int = 5, pass_at: float | None = None,
                  export_top: int | None = None) -> ComparisonReport:
    """Every task's items paired, transitions or score shifts, categories and slices; see the
    module docstring. `names` label the two sides (default: the systems' names); `pass_at`
    is the line of right for graded scores (--pass); `export_top`: how many of B's worst
    ranked items `export_errors` writes (default: the worst quarter)."""
    if not pairs:
        raise TunelabError("compare: nothing to compare")
    check_pass_line(pass_at)
    if export_top is not None and export_top < 1:
        raise TunelabError(f"--export-top {export_top}: must be 1 or more (default: the worst "
                           "quarter of the items)")
    keys, items = set(), []
    for pair in pairs:
        key, found = paired_items(pair, pass_at)
        keys.add(key)
        items += found
    key = "/".join(sorted(keys))
    check_pass_applies(pass_at, key, [i for i in items if i.graded])
    a_name, b_name = names or side_names(pairs[0].a.system.label, pairs[0].b.system.label)
    contexts = [context_of(p.task, c) for p in pairs for c in p.consistency]
    applicable = [c for c in CATEGORIES if any(c.applies(x) for x in contexts)]
    report = ComparisonReport(a_name, b_name, [p.task.name for p in pairs], key, items,
                              category_rows(items, applicable), [], examples, pass_at,
                              export_top=export_top)
    by_task = len(pairs) > 1
    report.slices = [slice_row(kind, value, members)
                     for kind, value, members in slice_groups(report.judged, by_task)]
    graded = [i for i in items if i.graded]
    if graded:
        report.shift = shift_of(graded)
        report.shift_slices = [ShiftRow(kind, value, shift_of(members))
                               for kind, value, members in slice_groups(report.ranked, by_task)]
    return report


def shift_of(items: Sequence[PairedItem]) -> ScoreShift:
    return score_shift([i.a_score for i in items], [i.b_score for i in items],
                       items[0].lower_is_better)


def check_pass_line(pass_at: float | None) -> None:
    """A pass line is a finite score of 0 or more."""
    if pass_at is not None and not (math.isfinite(pass_at) and pass_at >= 0):
        raise TunelabError(f"--pass {pass_at}: give a finite score of 0 or more on the "
                           "metric's own scale, e.g. --pass 30 for ROUGE-L 30")


def check_pass_applies(pass_at: float | None, key: str, graded: Sequence[PairedItem]) -> None:
    """--pass sets the line of a graded score; a right-or-wrong score has its own."""
    if pass_at is None:
        return
    if not graded:
        raise TunelabError(f"--pass {pass_at:g}: {key} already scores each item right or "
                           "wrong; leave --pass out (it sets the line for graded scores: "
                           "ROUGE, BLEU, chrF, token F1)")
    if pass_at > 100 and not any(i.lower_is_better for i in graded):
        raise TunelabError(f"--pass {pass_at:g}: {key} scores each item from 0 to 100; give "
                           "a line on that scale, e.g. --pass 30")


def compare_results(task: TaskConfig, a: EvalResult, b: EvalResult,
                    consistency: tuple[dict[str, bool] | None, dict[str, bool] | None] = (None,
                                                                                        None),
                    names: tuple[str, str] | None = None, examples: int = 5,
                    pass_at: float | None = None) -> ComparisonReport:
    """One task's two evaluations compared (see `compare_tasks`)."""
    return compare_tasks([TaskPair(task, a, b, consistency)], names, examples, pass_at)


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
            sum(name in i.a_errors for i in items if i.a_right is False),
            sum(name in i.b_errors for i in items if i.b_right is False),
            sum(name in i.a_errors for i in items), sum(name in i.b_errors for i in items)))
    return rows


def slice_groups(items: Sequence[PairedItem], by_task: bool
                 ) -> list[tuple[str, str, list[PairedItem]]]:
    """(slice, value, members): per task when several, per label (label tasks), per
    input-length third; empty groups left out."""
    groups: list[tuple[str, str, list[PairedItem]]] = []
    if by_task:
        groups += [("task", t, [i for i in items if i.task == t])
                   for t in dict.fromkeys(i.task for i in items)]
    labels = sorted({i.label for i in items if i.label is not None})
    groups += [("label", label, [i for i in items if i.label == label]) for label in labels]
    groups += length_buckets(items)
    return [(kind, value, members) for kind, value, members in groups if members]


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
    return SliceRow(kind, value, len(members),
                    100.0 * sum(i.a_right is True for i in members) / len(members),
                    100.0 * sum(i.b_right is True for i in members) / len(members), counts["fixed"],
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
    """Write B's errors as training records (`report.to_export()`: the still-wrong and broken
    items, and for a graded score with no pass line B's worst items, worst first): the input
    and the reference in the task data's own column names (data.fields), B's prediction, its
    score and the diagnosis in tunelab_* columns the loader keeps but does not train on.
    Returns the rows written."""
    out = Path(path)
    if out.exists():
        raise TunelabError(f"--export {out}: exists; choose a new file (nothing was written)")
    if not out.parent.is_dir():
        raise TunelabError(f"--export {out}: no directory {out.parent}; create it first")
    rows = []
    for item in report.to_export():
        fields = tasks[item.task].data.fields
        rows.append({fields.get("input", "input"): item.input,
                     fields.get("output", "output"): reference_text(item.reference),
                     **item.columns,
                     "tunelab_origin": item.key, "tunelab_task": item.task,
                     "tunelab_transition": item.outcome, "tunelab_prediction": item.b,
                     "tunelab_score": item.b_score, "tunelab_score_a": item.a_score,
                     "tunelab_errors": ",".join(item.b_errors)})
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
    partial.replace(out)
    return len(rows)
