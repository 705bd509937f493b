"""What `tunelab compare A B` reports: the paired items, the transitions (fixed, broken, still
wrong, still right) with an exact McNemar test, the graded scores' shift (score_shift.py),
error categories and slices, as text, Markdown and JSON (error_analysis.py computes them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tunelab.eval.tables import format_table
from tunelab.studies.score_shift import (
    ScoreShift,
    change,
    gain,
    most_improved,
    most_worsened,
    worst_items,
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
    a_right: bool | None
    """None: a graded score with no pass line chosen (the item is ranked, not judged)."""
    b_right: bool | None
    a_errors: list[str]
    b_errors: list[str]
    label: str | None = None
    """The reference's normalised label (label tasks), for the per-label slice."""
    columns: dict[str, object] = field(default_factory=dict, repr=False)
    """Extra row fields kept for the export (choices of a multiple-choice item)."""
    graded: bool = False
    """The score is graded (ROUGE, BLEU, ...), so the difference B - A is a measure."""
    lower_is_better: bool = False

    @property
    def transition(self) -> str | None:
        """fixed, broken, still wrong or still right; None when the item is not judged."""
        if self.a_right is None or self.b_right is None:
            return None
        return transition(self.a_right, self.b_right)

    @property
    def difference(self) -> float:
        return self.b_score - self.a_score

    @property
    def gain(self) -> float:
        """How much better B scored it than A (positive: improved)."""
        return gain(self.a_score, self.b_score, self.lower_is_better)

    @property
    def b_badness(self) -> float:
        """B's score turned so that larger is worse (for B's worst items)."""
        return self.b_score if self.lower_is_better else -self.b_score

    @property
    def outcome(self) -> str:
        """Its transition when judged, else improved / worsened / unchanged."""
        return self.transition or change(self.gain)

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
class ShiftRow:
    """One slice of the ranked items: how their graded scores moved."""

    slice: str
    value: str
    shift: ScoreShift


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
    pass_at: float | None = None
    """The line of right the user set for graded scores (--pass), on the score's scale."""
    shift: ScoreShift | None = None
    """How the graded items' scores moved (None: no graded score)."""
    shift_slices: list[ShiftRow] = field(default_factory=list)
    """Slices of the ranked items (graded, no pass line)."""
    export_top: int | None = None
    """B's worst ranked items `export_errors` writes (None: the worst quarter)."""

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def judged(self) -> list[PairedItem]:
        """The items with a right and a wrong: label scores, graded ones past --pass."""
        return [i for i in self.items if i.transition is not None]

    @property
    def ranked(self) -> list[PairedItem]:
        """Graded items with no pass line: compared by their score difference."""
        return [i for i in self.items if i.graded and i.transition is None]

    def counts(self) -> dict[str, int]:
        found = Counter(item.transition for item in self.judged)
        return {t: found.get(t, 0) for t in TRANSITIONS}

    @property
    def p_value(self) -> float:
        counts = self.counts()
        return mcnemar_exact(counts["fixed"], counts["broken"])

    @property
    def a_right(self) -> float | None:
        """Percent of the judged items A got right (None: none is judged)."""
        judged = self.judged
        return 100.0 * sum(i.a_right is True for i in judged) / len(judged) if judged else None

    @property
    def b_right(self) -> float | None:
        judged = self.judged
        return 100.0 * sum(i.b_right is True for i in judged) / len(judged) if judged else None

    def most_improved(self) -> list[PairedItem]:
        return most_improved(self.ranked, self.examples)

    def most_worsened(self) -> list[PairedItem]:
        return most_worsened(self.ranked, self.examples)

    def to_export(self) -> list[PairedItem]:
        """What `--export` writes: B's wrong judged items (in item order), then B's worst
        ranked items, worst first (`export_top`, default the worst quarter)."""
        return [i for i in self.items if i.b_right is False] + worst_items(self.ranked,
                                                                          self.export_top)

    def line(self) -> str:
        """What makes an item right: the metric's key, and the user's line on it if set."""
        if self.pass_at is None:
            return self.key
        lower = any(i.lower_is_better for i in self.items if i.graded)
        return f"{self.key} {'<=' if lower else '>='} {self.pass_at:g} (--pass)"

    def headlines(self) -> list[str]:
        """One sentence for the judged items (transitions), one for the graded (shift)."""
        where = f"{self.a_name} -> {self.b_name} on {', '.join(self.tasks)}"
        lines = []
        judged = self.judged
        if judged:
            c = self.counts()
            lines.append(
                f"{where} ({len(judged)} items, right by {self.line()}): {self.a_right:.1f}% -> "
                f"{self.b_right:.1f}%; fixed {c['fixed']}, broken {c['broken']}, still wrong "
                f"{c['still wrong']}, still right {c['still right']}; exact McNemar "
                f"p={self.p_value:.4f}")
        if self.shift is not None:
            s = self.shift
            lines.append(
                f"{where} ({s.n} items, {self.key} per item, B - A): mean {s.a_mean:.1f} -> "
                f"{s.b_mean:.1f}, difference {s.mean_difference:+.2f} [95% CI "
                f"{s.ci[0]:+.2f}, {s.ci[1]:+.2f}]; improved {s.improved}, worsened "
                f"{s.worsened}, unchanged {s.unchanged}; Wilcoxon signed-rank "
                f"p={s.wilcoxon_p:.4f}" + ("; no pass line (--pass X: fixed/broken from "
                                           "score X)" if self.ranked else ""))
        return lines

    def headline(self) -> str:
        return "\n".join(self.headlines())

    def short_table(self) -> str:
        """The headline and the error categories that occur (the quickstart's last lines)."""
        among_wrong = bool(self.judged)
        rows = [[r.category, *((r.a_errors, r.b_errors) if among_wrong else (r.a_all, r.b_all))]
                for r in self.categories if (r.a_errors or r.b_errors if among_wrong
                                             else r.a_all or r.b_all)]
        lines = [self.headline()]
        if rows:
            what = "wrong predictions" if among_wrong else "all predictions"
            lines.append(format_table([f"error ({what})", self.a_name, self.b_name], rows))
        return "\n".join(lines)

    def table(self, markdown: bool = False) -> str:
        lines = [self.headline()]
        if self.judged:
            c = self.counts()
            lines += ["", format_table(["", "n", "share"],
                                       [[t, c[t], f"{100 * c[t] / len(self.judged):.1f}%"]
                                        for t in TRANSITIONS], markdown), "",
                      "error categories (count among wrong predictions; all predictions in "
                      "brackets)",
                      format_table(["category", self.a_name, self.b_name, "what it counts"],
                                   [[r.category, f"{r.a_errors} ({r.a_all})",
                                     f"{r.b_errors} ({r.b_all})", r.description]
                                    for r in self.categories], markdown)]
        else:
            lines += ["", "error categories (count among all predictions)",
                      format_table(["category", self.a_name, self.b_name, "what it counts"],
                                   [[r.category, r.a_all, r.b_all, r.description]
                                    for r in self.categories], markdown)]
        if self.slices:
            lines += ["", "slices (percent right; fixed / broken; exact McNemar p)",
                      format_table(["slice", "value", "n", self.a_name, self.b_name, "fixed",
                                    "broken", "p"],
                                   [[s.slice, s.value, s.n, f"{s.a_right:.1f}",
                                     f"{s.b_right:.1f}", s.fixed, s.broken, f"{s.p_value:.3f}"]
                                    for s in self.slices], markdown)]
        if self.shift_slices:
            lines += ["", f"slices (mean {self.key}; difference B - A [95% CI]; improved / "
                          "worsened; Wilcoxon p)", format_table(
                          ["slice", "value", "n", self.a_name, self.b_name, "difference",
                           "improved", "worsened", "p"], shift_cells(self.shift_slices),
                          markdown)]
        return "\n".join(lines + self.example_tables(markdown))

    def example_tables(self, markdown: bool) -> list[str]:
        """Side-by-side examples: per transition, and the most improved / worsened items."""
        lines: list[str] = []
        c = self.counts()
        for group in ("fixed", "broken", "still wrong"):
            chosen = [i for i in self.judged if i.transition == group][:self.examples]
            if not chosen:
                continue
            lines += ["", f"{group} (first {len(chosen)} of {c[group]}):",
                      format_table(["#", "input", "reference", self.a_name, self.b_name,
                                    "errors"],
                                   [[i.index, clip(i.input), clip(reference_text(i.reference)),
                                     clip(i.a), clip(i.b),
                                     ", ".join(i.b_errors if not i.b_right else i.a_errors)]
                                    for i in chosen], markdown)]
        shift = self.shift
        for title, chosen, total in (
                ("most improved", self.most_improved(), shift.improved if shift else 0),
                ("most worsened", self.most_worsened(), shift.worsened if shift else 0)):
            if not chosen:
                continue
            lines += ["", f"{title} ({len(chosen)} of {total}; {self.key} per item):",
                      format_table(["#", "input", "reference", self.a_name, self.b_name,
                                    "A score", "B score", "B - A"],
                                   [[i.index, clip(i.input), clip(reference_text(i.reference)),
                                     clip(i.a), clip(i.b), f"{i.a_score:.1f}",
                                     f"{i.b_score:.1f}", f"{i.difference:+.1f}"]
                                    for i in chosen], markdown)]
        return lines

    def to_json(self) -> dict[str, object]:
        judged = bool(self.judged)
        return {"a": self.a_name, "b": self.b_name, "tasks": self.tasks, "key": self.key,
                "n": self.n, "pass": self.pass_at, "judged": len(self.judged),
                "counts": self.counts() if judged else None,
                "mcnemar_p": self.p_value if judged else None,
                "a_right": self.a_right, "b_right": self.b_right,
                "score_shift": asdict(self.shift) if self.shift is not None else None,
                "most_improved": [ranked_json(i) for i in self.most_improved()],
                "most_worsened": [ranked_json(i) for i in self.most_worsened()],
                "categories": [asdict(r) for r in self.categories],
                "slices": [asdict(s) for s in self.slices],
                "shift_slices": [asdict(s) for s in self.shift_slices],
                "items": [dict(asdict(i), transition=i.transition, difference=i.difference,
                               outcome=i.outcome) for i in self.items]}


def ranked_json(item: PairedItem) -> dict[str, object]:
    return {"task": item.task, "key": item.key, "index": item.index, "a_score": item.a_score,
            "b_score": item.b_score, "difference": item.difference}


def shift_cells(rows: Sequence[ShiftRow]) -> list[list[object]]:
    """Table cells of shift slices (the text table and the HTML page)."""
    return [[r.slice, r.value, r.shift.n, f"{r.shift.a_mean:.1f}", f"{r.shift.b_mean:.1f}",
             f"{r.shift.mean_difference:+.2f} [{r.shift.ci[0]:+.2f}, {r.shift.ci[1]:+.2f}]",
             r.shift.improved, r.shift.worsened, f"{r.shift.wilcoxon_p:.3f}"] for r in rows]


def clip(text: str, width: int = 70) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def reference_text(reference: object) -> str:
    return str(reference[0]) if isinstance(reference, list) and reference else str(reference)
