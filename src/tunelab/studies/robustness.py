"""`tunelab robustness`: every system on the same test items, clean and under each perturbation.

    read the task's items -> perturb each item's input (seeded per item: every system sees the
    same noisy text) -> for every system (base k-shot, each fine-tuned run): score the clean
    items, then each perturbation at each severity -> per system x perturbation: the score, its
    change from clean (paired bootstrap CI), the rate of changed predictions, and the worst case
    (each item's lowest score over the clean and all perturbed versions, as HELM's robustness
    score) -> robustness.json, robustness.md, plots, one eval dir per system x perturbation.

A perturbation (probes/perturbations.py) is a seeded `(text, rng, severity) -> text`; one whose
result does not depend on severity (lowercase) is scored once however many severities are swept.
The same pieces score a training run's `robustness:` block on the base model before training and
the fine-tuned model after (`brittleness`): did fine-tuning make the model more or less brittle?
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from tunelab.config import RobustnessConfig, TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.data.transforms.perturbations import (
    Perturbation,
    check_severity,
    parse_perturbations,
    perturb_record,
)
from tunelab.eval.compare import item_scores, paired_difference, primary_key, scored_by
from tunelab.eval.metrics import delta_ci, paired_deltas
from tunelab.eval.output_types import Framing, input_text
from tunelab.eval.runner import (
    EvalResult,
    evaluate_records,
    evaluate_versions,
    task_items,
    write_result,
)
from tunelab.eval.tables import format_table
from tunelab.models import LoadedModel
from tunelab.runs import RunDir, StudyFiles, System
from tunelab.studies.baselines import each_system, system_groups
from tunelab.studies.error_analysis import row_key
from tunelab.studies.robustness_plots import plot_robustness, plot_severity, variant_label

if TYPE_CHECKING:
    from tunelab.models import prompt_caches
else:  # it uses torch as it is imported
    prompt_caches = deferred("tunelab.models.prompt_caches")

DEFAULT_SEVERITIES = (0.1,)


@dataclass
class Variant:
    """The task's items under one perturbation at one severity (None: severity-free)."""

    perturbation: Perturbation
    severity: float | None
    records: list[Record]
    changed_inputs: int
    """Items whose input text the perturbation actually changed."""

    @property
    def label(self) -> str:
        name = self.perturbation.name
        return name if self.severity is None else f"{name}@{self.severity:g}"


def item_key(record: Record, index: int) -> str:
    """The stable identity of an item (its origin, else its position) that seeds its noise."""
    return record.origin or str(index)


def perturbed_variants(records: Sequence[Record], perturbations: Sequence[Perturbation],
                       severities: Sequence[float], seed: int = 0,
                       instruction: bool = False) -> list[Variant]:
    """Every perturbation at every severity (once for a severity-free one), all items."""
    if not records:
        raise TunelabError("robustness: no items to perturb; check the task's split and --limit")
    severities = [check_severity(s) for s in severities] or list(DEFAULT_SEVERITIES)
    variants = []
    for perturbation in perturbations:
        for severity in (severities if perturbation.graded else [None]):
            level = severity if severity is not None else 1.0
            noisy = [perturb_record(r, perturbation, level, seed, item_key(r, i), instruction)
                     for i, r in enumerate(records)]
            changed = sum(input_text(a) != input_text(b) for a, b in zip(records, noisy,
                                                                        strict=True))
            variants.append(Variant(perturbation, severity, noisy, changed))
    return variants


@dataclass
class RobustnessRow:
    system: str
    perturbation: str
    severity: float | None
    key: str
    clean: float
    perturbed: float
    delta: float
    ci: tuple[float, float]
    """95% paired-bootstrap interval of perturbed - clean."""
    changed_inputs: int
    changed_predictions: float
    """Percent of items whose prediction differs from the clean item's (invariance: 0)."""
    n: int
    lower_is_better: bool = False

    @property
    def significant_drop(self) -> bool:
        return self.ci[0] > 0 if self.lower_is_better else self.ci[1] < 0


@dataclass
class WorstCase:
    """Each item's lowest score over its clean and every perturbed version (at one severity,
    severity-free perturbations included), averaged: right only if right under every one."""

    system: str
    severity: float | None
    key: str
    clean: float
    worst: float


@dataclass
class SystemRun:
    """One system's results: clean and per variant label."""

    system: System
    clean: EvalResult
    perturbed: dict[str, EvalResult] = field(default_factory=dict)


def score_system(lm: LoadedModel, task: TaskConfig, records: Sequence[Record],
                 variants: Sequence[Variant], system: System, pool: Sequence[Record] = (),
                 framing: Framing | None = None) -> SystemRun:
    """Score one system on the clean items, then on every variant at once (the shots stay
    clean): each perturbed prompt runs from its first token that differs from the clean one."""
    shots = system.shots
    with prompt_caches.kept_prompts(lm):
        run = SystemRun(system, evaluate_records(lm, task, records, shots, pool, system, framing))
        perturbed = evaluate_versions(lm, task, [v.records for v in variants], shots, pool, system,
                                      framing)
    run.perturbed = {v.label: result for v, result in zip(variants, perturbed, strict=True)}
    return run


def changed_predictions(clean: EvalResult, noisy: EvalResult) -> list[bool]:
    """Per item: whether the prediction differs from the clean item's."""
    return [_norm(a["prediction"]) != _norm(b["prediction"])
            for a, b in zip(clean.predictions, noisy.predictions, strict=True)]


def _norm(prediction: object) -> str:
    return " ".join(str(prediction).split()).lower()


class VariantInfo(TypedDict):
    """One variant as robustness.json describes it."""

    label: str
    perturbation: str
    description: str
    severity: float | None
    changed_inputs: int


class ConsistencyRow(TypedDict):
    """One item of a system's consistency.jsonl."""

    key: str
    index: int
    changed: bool
    """Its prediction changed under some perturbation."""


@dataclass
class RobustnessReport:
    task: str
    n: int
    key: str
    systems: list[str]
    variants: list[VariantInfo]
    rows: list[RobustnessRow]
    worst: list[WorstCase]
    consistency: dict[str, list[ConsistencyRow]] = field(default_factory=dict, repr=False)
    """Per system, per item: whether its prediction changed under some perturbation."""
    brittleness: list[BrittlenessRow] = field(default_factory=list)
    """A training run's block: each perturbation's drop before vs after training."""

    def table(self, markdown: bool = False) -> str:
        headers = ["system", "perturbation", "n changed", f"{self.key} clean",
                   f"{self.key} perturbed", "change [95% CI]", "predictions changed"]
        body = [[r.system, variant_label(r.perturbation, r.severity), f"{r.changed_inputs}/{r.n}",
                 f"{r.clean:.2f}", f"{r.perturbed:.2f}",
                 f"{r.delta:+.2f} [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}]" + (" *" if r.significant_drop
                                                                      else ""),
                 f"{r.changed_predictions:.1f}%"] for r in self.rows]
        worst = format_table(["system", "severity", "clean", "worst case"],
                             [[w.system, "-" if w.severity is None else f"{w.severity:g}",
                               f"{w.clean:.2f}", f"{w.worst:.2f}"] for w in self.worst], markdown)
        return "\n".join([
            f"{self.task}: n={self.n} items, score {self.key}; * = significant drop (95% CI < 0)",
            format_table(headers, body, markdown), "",
            f"worst case ({self.worst[0].key if self.worst else self.key} per item: lowest over "
            "the clean and every perturbed version)", worst])

    def brittleness_table(self, markdown: bool = False) -> str:
        """Per perturbation: the drop from clean before and after training and its change."""
        return format_table(
            ["perturbation", "drop before", "drop after", "change [95% CI]"],
            [[variant_label(r.perturbation, r.severity), f"{r.before_drop:+.2f}", f"{r.after_drop:+.2f}",
              f"{r.change:+.2f} [{r.ci[0]:+.1f}, {r.ci[1]:+.1f}]"] for r in self.brittleness],
            markdown)

    def to_json(self) -> dict[str, object]:
        return {"task": self.task, "n": self.n, "key": self.key, "systems": self.systems,
                "variants": self.variants,
                "rows": [dict(asdict(r), significant_drop=r.significant_drop) for r in self.rows],
                "worst_case": [asdict(w) for w in self.worst],
                "brittleness": [asdict(r) for r in self.brittleness]}


def robustness_report(task: TaskConfig, runs: Sequence[SystemRun],
                      variants: Sequence[Variant]) -> RobustnessReport:
    """Rows, worst cases and per-item consistency from every system's results."""
    key = primary_key(task, runs[0].clean)
    rows: list[RobustnessRow] = []
    worst: list[WorstCase] = []
    consistency: dict[str, list[ConsistencyRow]] = {}
    for run in runs:
        changed_any = [False] * run.clean.n
        for variant in variants:
            noisy = run.perturbed[variant.label]
            change = paired_difference(task, run.clean, noisy, key)
            flips = changed_predictions(run.clean, noisy)
            changed_any = [a or b for a, b in zip(changed_any, flips, strict=True)]
            rows.append(RobustnessRow(run.system.label, variant.perturbation.name, variant.severity,
                                      key, change.before, change.after, change.delta, change.ci,
                                      variant.changed_inputs, 100.0 * sum(flips) / len(flips),
                                      run.clean.n, change.lower_is_better))
        worst += worst_cases(task, run, variants)
        consistency[run.system.label] = [
            ConsistencyRow(key=row_key(row), index=row["index"], changed=flag)
            for row, flag in zip(run.clean.predictions, changed_any, strict=True)]
    described = [VariantInfo(label=v.label, perturbation=v.perturbation.name,
                             description=v.perturbation.description, severity=v.severity,
                             changed_inputs=v.changed_inputs) for v in variants]
    return RobustnessReport(task.name, runs[0].clean.n, key, [r.system.label for r in runs], described,
                            rows, worst, consistency)


def worst_cases(task: TaskConfig, run: SystemRun, variants: Sequence[Variant]) -> list[WorstCase]:
    """HELM's worst case per severity: every item at its lowest over clean + perturbed."""
    clean = item_scores(task, run.clean)
    pick = np.max if clean.lower_is_better else np.min
    graded = sorted({v.severity for v in variants if v.severity is not None})
    levels: list[float | None] = list(graded) if graded else [None]
    out = []
    for level in levels:
        chosen = [v for v in variants if v.severity in (level, None)]
        table = np.array([clean.values] + [item_scores(task, run.perturbed[v.label],
                                                       clean.key).values for v in chosen])
        out.append(WorstCase(run.system.label, level, clean.key, float(np.mean(clean.values)),
                             float(np.mean(pick(table, axis=0)))))
    return out


def run_robustness(
    task: TaskConfig,
    perturbations: Sequence[Perturbation],
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    baselines: Sequence[str] = ("zero", "few"),
    severities: Sequence[float] = DEFAULT_SEVERITIES,
    shots: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    instruction: bool = False,
    out_dir: str | Path | None = None,
) -> RobustnessReport:
    """Score every system (baselines of the base model, each adapter run) on the task's items
    clean and perturbed; see the module docstring. Perturbing happens before any model loads,
    so an item without input text fails at once."""
    groups = system_groups(task, model, adapters, baselines, shots)
    most_shots = max(s.shots for g in groups for s in g.systems)
    records, pool, framing = task_items(task, limit, most_shots)
    variants = perturbed_variants(records, perturbations, severities, seed, instruction)
    runs = [score_system(lm, task, records, variants, system, pool, framing)
            for lm, system in each_system(groups)]
    report = robustness_report(task, runs, variants)
    if out_dir:
        write_robustness(report, runs, StudyFiles(Path(out_dir), "robustness"))
    return report


def write_robustness(report: RobustnessReport, runs: Sequence[SystemRun],
                     files: StudyFiles) -> None:
    """robustness.json/.md, consistency.jsonl per system, the plots, and each system x variant's
    eval dir (metrics.json + predictions.jsonl) for `tunelab compare`."""
    for run in runs:
        write_result(run.clean, files.evaluation(run.system))
        for label, result in run.perturbed.items():
            write_result(result, files.evaluation(run.system, label))
        with files.consistency(run.system).open("w") as handle:
            for row in report.consistency[run.system.label]:
                handle.write(json.dumps(row) + "\n")
    files.write(report.to_json(), f"# Robustness: {report.task}\n\n"
                                  f"{report.table(markdown=True)}\n")
    plot_robustness(report, files.plot("robustness"))
    if len({r.severity for r in report.rows if r.severity is not None}) > 1:
        plot_severity(report, files.plot("severity"))


@dataclass
class BrittlenessRow:
    """One perturbation before and after training: each drop from clean and how it changed."""

    perturbation: str
    severity: float | None
    key: str
    before_drop: float
    after_drop: float
    change: float
    """after_drop - before_drop (positive: fine-tuning made the drop smaller)."""
    ci: tuple[float, float]
    """95% paired bootstrap interval of the change (same resamples of the items for all four)."""


def brittleness(task: TaskConfig, before: SystemRun, after: SystemRun,
                variants: Sequence[Variant]) -> list[BrittlenessRow]:
    """Per variant: the drop from clean before and after training, and the change of the drop
    (a difference in differences, one set of bootstrap resamples for all four results)."""
    key = primary_key(task, after.clean)
    name, metric = scored_by(task, after.clean, key)
    rows = []
    for variant in variants:
        label = variant.label
        drop_before = paired_deltas(before.clean.items[name], before.perturbed[label].items[name],
                                    metric, key)
        drop_after = paired_deltas(after.clean.items[name], after.perturbed[label].items[name],
                                   metric, key)
        b = before.perturbed[label].scores[key] - before.clean.scores[key]
        a = after.perturbed[label].scores[key] - after.clean.scores[key]
        rows.append(BrittlenessRow(variant.perturbation.name, variant.severity, key, b, a, a - b,
                                   delta_ci(drop_after - drop_before)))
    return rows


@dataclass
class RunRobustness:
    """A training run's `robustness:` block: the run's test items, perturbed once, scored on
    the base model before training and on the fine-tuned model after."""

    task: TaskConfig
    records: list[Record]
    variants: list[Variant]

    @classmethod
    def of(cls, config: RobustnessConfig, task: TaskConfig | None) -> RunRobustness | None:
        """The block's plan, checked and perturbed before any model loads (None: no block)."""
        if not config.perturbations:
            return None
        chosen = parse_perturbations(config.perturbations, "robustness.perturbations")
        if task is None:
            raise TunelabError("robustness.perturbations: a multi-task run has no single test "
                               "split; run tunelab robustness --adapter RUN --task T per task")
        records, _, _ = task_items(task, config.limit)
        severities = [check_severity(s, "robustness.severity") for s in config.severity]
        return cls(task, records, perturbed_variants(records, chosen, severities, config.seed,
                                                     config.instruction))

    def score(self, lm: LoadedModel, system: System) -> SystemRun:
        return score_system(lm, self.task, self.records, self.variants, system)

    def finish(self, before: SystemRun, after: SystemRun, run: RunDir,
               summary: dict[str, Any]) -> RobustnessReport:  # Any: summary.json's JSON values
        """robustness/ (both systems, like `tunelab robustness --out`), the brittleness rows
        in robustness.json, and the summary's line."""
        report = robustness_report(self.task, [before, after], self.variants)
        report.brittleness = brittleness(self.task, before, after, self.variants)
        write_robustness(report, [before, after], run.robustness)
        summary["robustness"] = {
            "key": report.key, "worst_case": {w.system: w.worst for w in report.worst},
            "mean_drop": {s: float(np.mean([r.delta for r in report.rows if r.system == s]))
                          for s in report.systems}}
        print("robustness (before -> after training):")
        print(report.brittleness_table())
        return report
