"""`tunelab ratings`: what the human ratings of an evaluation directory say.

    ratings.sqlite + the systems' predictions -> per system and criterion: mean with a
    bootstrap CI -> each other system against the reference (the fine-tune when rated): the
    paired difference on the items both were rated on, bootstrap CI and Wilcoxon -> agreement
    per criterion: Krippendorff's alpha (ordinal), and weighted Cohen's kappa when exactly two
    raters -> pairwise judgements: win / tie / loss per pair and Bradley-Terry strengths ->
    per system, criterion and automatic metric: Spearman and Kendall between the item's mean
    human score and the metric's per-item score ("does ROUGE agree with your raters?").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypedDict

import numpy as np

from tunelab.config import TaskConfig
from tunelab.core.errors import TunelabError
from tunelab.eval.compare import item_scores
from tunelab.eval.compare import paired_values as paired_ratings
from tunelab.eval.metrics import task_metrics
from tunelab.eval.runner import EvalResult
from tunelab.eval.tables import format_table
from tunelab.human.agreement import (
    bradley_terry,
    krippendorff_alpha,
    mean_ci,
    rank_correlations,
    weighted_kappa,
)
from tunelab.human.store import RatingStore


@dataclass
class SystemScore:
    system: str
    criterion: str
    n: int
    mean: float
    ci: tuple[float, float]


@dataclass
class Difference:
    criterion: str
    system: str
    reference: str
    n: int
    delta: float
    """mean(reference - system) on items both were rated on."""
    ci: tuple[float, float]
    wilcoxon_p: float


@dataclass
class Agreement:
    criterion: str
    raters: int
    alpha: float
    kappa: float | None = None


@dataclass
class Correlation:
    system: str
    criterion: str
    metric: str
    n: int
    spearman: float
    kendall: float


class PairwiseRow(TypedDict):
    """One ordered pair of systems' pairwise judgements."""

    first: str
    second: str
    n: int
    first_wins: int
    ties: int
    second_wins: int


@dataclass
class RatingsReport:
    scores: list[SystemScore]
    differences: list[Difference]
    agreement: list[Agreement]
    pairwise: list[PairwiseRow] = field(default_factory=list)
    strengths: dict[str, float] = field(default_factory=dict)
    correlations: list[Correlation] = field(default_factory=list)
    marks: list[dict[str, str]] = field(default_factory=list)
    """Items a rater skipped or flagged (with their note)."""
    note: str = ""
    """Why a part is missing (e.g. no task to score the metrics with)."""

    def table(self) -> str:
        lines = ["human ratings: mean [95% bootstrap CI]",
                 format_table(["system", "criterion", "n", "mean [95% CI]"],
                              [[s.system, s.criterion, s.n,
                                f"{s.mean:.2f} [{s.ci[0]:.2f}, {s.ci[1]:.2f}]"]
                               for s in self.scores])]
        if self.differences:
            lines += ["", "paired differences (reference - system, items rated for both)",
                      format_table(["criterion", "reference", "system", "n", "delta [95% CI]",
                                    "Wilcoxon p"],
                                   [[d.criterion, d.reference, d.system, d.n,
                                     f"{d.delta:+.2f} [{d.ci[0]:+.2f}, {d.ci[1]:+.2f}]",
                                     f"{d.wilcoxon_p:.4f}"] for d in self.differences])]
        lines += ["", "inter-rater agreement",
                  format_table(["criterion", "raters", "Krippendorff alpha (ordinal)",
                                "weighted kappa (2 raters)"],
                               [[a.criterion, a.raters, f"{a.alpha:.3f}",
                                 "-" if a.kappa is None else f"{a.kappa:.3f}"]
                                for a in self.agreement])]
        if self.pairwise:
            lines += ["", "pairwise preferences",
                      format_table(["first", "second", "n", "first wins", "ties", "second wins"],
                                   [[p["first"], p["second"], p["n"], p["first_wins"], p["ties"],
                                     p["second_wins"]] for p in self.pairwise]),
                      "Bradley-Terry strength: " + ", ".join(
                          f"{s} {v:.2f}" for s, v in sorted(self.strengths.items(),
                                                            key=lambda kv: -kv[1]))]
        if self.correlations:
            lines += ["", "human score vs automatic metric, per item (Spearman, Kendall)",
                      format_table(["system", "criterion", "metric", "n", "Spearman",
                                    "Kendall"],
                                   [[c.system, c.criterion, c.metric, c.n, f"{c.spearman:.3f}",
                                     f"{c.kendall:.3f}"] for c in self.correlations])]
        flags = [m for m in self.marks if m["kind"] == "flag"]
        skips = len(self.marks) - len(flags)
        if self.marks:
            lines += ["", f"{len(flags)} item(s) flagged, {skips} skipped"]
            lines += [f"  flag {m['item']} by {m['rater']}: {m['note'] or '(no note)'}"
                      for m in flags]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"scores": [asdict(s) for s in self.scores],
                "differences": [asdict(d) for d in self.differences],
                "agreement": [asdict(a) for a in self.agreement], "pairwise": self.pairwise,
                "strengths": self.strengths,
                "correlations": [asdict(c) for c in self.correlations], "marks": self.marks,
                "note": self.note}


def ratings_report(store: RatingStore, task: TaskConfig | None = None,
                   results: Mapping[str, EvalResult] | None = None, reference: str | None = None,
                   scale: Sequence[int] | None = None) -> RatingsReport:
    """The report of every rating in `store`; with the systems' results, the correlation of
    each criterion with each per-item metric score. The scale is the one the session rated on
    (kept in the store), else 1-5."""
    scale = scale or tuple(range(1, int(store.meta("scale") or 5) + 1))
    scores = store.scores()
    if not scores and not store.preferences():
        raise TunelabError(f"{store.path}: no ratings yet; rate with tunelab rate or import "
                           "a CSV (tunelab ratings DIR --import FILE)")
    # (system, criterion) -> item -> mean over raters; criterion -> rater -> "item|system" -> s
    per_item: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    by_rater: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for s in scores:
        per_item[s.system, s.criterion][s.item].append(s.score)
        by_rater[s.criterion][s.rater][f"{s.item}|{s.system}"] = s.score
    means = {key: {item: float(np.mean(v)) for item, v in items.items()}
             for key, items in per_item.items()}
    report = RatingsReport([], [], [])
    for (system, criterion), items in sorted(means.items()):
        mean, low, high = mean_ci(list(items.values()))
        report.scores.append(SystemScore(system, criterion, len(items), mean, (low, high)))
    systems = sorted({system for system, _ in means})
    tuned = [s for s in systems if results and s in results and results[s].system.fine_tuned]
    ref = reference or (tuned[0] if tuned else systems[-1] if systems else None)
    for criterion in sorted({c for _, c in means}):
        for system in systems:
            if (ref is None or system == ref or (ref, criterion) not in means
                    or (system, criterion) not in means):
                continue
            a, b = means[system, criterion], means[ref, criterion]
            shared = sorted(set(a) & set(b))
            if len(shared) < 2:
                continue
            paired = paired_ratings([a[i] for i in shared], [b[i] for i in shared])
            report.differences.append(Difference(criterion, system, ref, paired.n, paired.delta,
                                                 paired.ci, paired.wilcoxon_p))
        raters = by_rater[criterion]
        kappa = None
        if len(raters) == 2:
            first, second = raters.values()
            shared_units = sorted(set(first) & set(second))
            if shared_units:
                kappa = weighted_kappa([int(first[u]) for u in shared_units],
                                       [int(second[u]) for u in shared_units], list(scale))
        report.agreement.append(Agreement(criterion, len(raters),
                                          krippendorff_alpha(raters, domain=scale), kappa))
    add_pairwise(report, store)
    report.marks = [{"rater": r, "item": i, "kind": k, "note": n} for r, i, k, n in store.marks()]
    if task is not None and results:
        report.correlations = correlations(task, results, means)
    return report


def add_pairwise(report: RatingsReport, store: RatingStore) -> None:
    judgements = [(p.first, p.second, p.preference) for p in store.preferences()]
    if not judgements:
        return
    pairs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for first, second, preference in judgements:
        pairs[first, second].append(preference)
    for (first, second), values in sorted(pairs.items()):
        report.pairwise.append(PairwiseRow(first=first, second=second, n=len(values),
                                           first_wins=values.count(-1), ties=values.count(0),
                                           second_wins=values.count(1)))
    report.strengths = bradley_terry(judgements)


def correlations(task: TaskConfig, results: Mapping[str, EvalResult],
                 means: Mapping[tuple[str, str], Mapping[str, float]]) -> list[Correlation]:
    """Per rated system x criterion x per-item metric key, over the items rated."""
    out = []
    for (system, criterion), items in sorted(means.items()):
        result = results.get(system)
        if result is None:
            continue
        keys = [str(row.get("origin") or row["index"]) for row in result.predictions]
        for name, metric in task_metrics(task).items():
            for key in metric.item_keys or (next(iter(metric.aggregate(result.items[name]))),):
                values = dict(zip(keys, item_scores(task, result, key).values, strict=True))
                shared = [i for i in items if i in values]
                if len(shared) < 3:
                    continue
                rho, tau = rank_correlations([items[i] for i in shared],
                                             [values[i] for i in shared])
                out.append(Correlation(system, criterion, f"{key} ({name})", len(shared), rho,
                                       tau))
    return out
