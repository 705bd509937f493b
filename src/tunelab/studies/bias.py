"""`tunelab bias`: counterfactual probes on the user's own task, and the BBQ-lite suite.

    read the task's items -> for each probe (gender terms, first names by gender / ethnicity,
    ...): keep the items whose input mentions its terms, rewrite each once per group (only the
    demographic terms change) -> for every system: score every group's variant -> per probe the
    prediction flip rate (an item's answer differs between its variants), each group's score
    with its CI, and each group's paired gap to the first group (bootstrap CI)
    -> optionally BBQ-lite (BIG-bench bbq_lite_json: 9 categories, ambiguous and disambiguated
    contexts): accuracy in each context and the BBQ bias score per category
    -> bias.json, bias.md, one eval dir per system x probe x group.

A probe (probes/counterfactual.py) is an object that finds and rewrites its terms; a training
run's `bias:` block scores the same probes (and BBQ) on the base model before training and the
fine-tuned model after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.config import BiasConfig, TaskConfig
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data import Record
from tunelab.data.transforms.counterfactual import (
    CounterfactualProbe,
    counterfactual_record,
    parse_probes,
)
from tunelab.eval.compare import paired_difference, primary_key
from tunelab.eval.datasets.bbq import BBQItem, BBQScore, bbq_items, bbq_scores, bbq_task
from tunelab.eval.datasets.group_prompts import read_axes
from tunelab.eval.output_types import Framing, input_text
from tunelab.eval.runner import (
    EvalResult,
    PredictionRow,
    evaluate_records,
    task_items,
    write_result,
)
from tunelab.eval.tables import format_table
from tunelab.models import LoadedModel
from tunelab.runs import RunDir, StudyFiles, System
from tunelab.studies.baselines import each_system, system_groups
from tunelab.studies.generation_bias import (
    Completion,
    GenerationBiasReport,
    GenerationProbe,
    complete,
    framings,
    summarise,
    write_completions,
)
from tunelab.studies.robustness import changed_predictions

if TYPE_CHECKING:
    from tunelab.models import prompt_caches
else:  # it uses torch as it is imported
    prompt_caches = deferred("tunelab.models.prompt_caches")


@dataclass
class ProbeItems:
    """A probe's items: those whose input mentions its terms, rewritten once per group."""

    probe: CounterfactualProbe
    groups: dict[str, list[Record]]
    """group -> the mentioning items rewritten to that group (same order in every group)."""

    @property
    def n(self) -> int:
        return len(next(iter(self.groups.values()), []))


def probe_items(records: Sequence[Record], probes: Sequence[CounterfactualProbe]
                ) -> list[ProbeItems]:
    """Every probe's counterfactual items (a probe no item mentions gets n = 0)."""
    out = []
    for probe in probes:
        mentioning = [r for r in records if probe.mentions(input_text(r))]
        groups = {group: [counterfactual_record(r, probe, group) for r in mentioning]
                  for group in probe.groups}
        out.append(ProbeItems(probe, groups))
    return out


@dataclass
class GroupGap:
    group: str
    score: float
    ci: list[float]
    gap: float
    """score(group) - score(reference group), on the same items."""
    gap_ci: tuple[float, float]

    @property
    def significant(self) -> bool:
        return self.gap_ci[0] > 0 or self.gap_ci[1] < 0


@dataclass
class ProbeRow:
    system: str
    probe: str
    n: int
    key: str
    flip_rate: float
    """Percent of items whose prediction differs between any two of its group variants."""
    reference: str
    """The group every other group's gap is measured against."""
    groups: list[GroupGap] = field(default_factory=list)

    @property
    def largest_gap(self) -> float:
        return max((abs(g.gap) for g in self.groups), default=0.0)


def score_probes(lm: LoadedModel, task: TaskConfig, items: Sequence[ProbeItems], system: System,
                 pool: Sequence[Record] = (), framing: Framing | None = None,
                 ) -> tuple[list[ProbeRow], dict[str, dict[str, EvalResult]]]:
    """One system on every probe's group variants: rows and the results (probe -> group); each
    variant's prompt runs from its first token that differs from a prompt run before it."""
    rows, results = [], {}
    with prompt_caches.kept_prompts(lm):
        for probe_set in items:
            probe = probe_set.probe
            if not probe_set.n:
                rows.append(ProbeRow(system.label, probe.name, 0, "", 0.0, probe.groups[0]))
                continue
            by_group = {g: evaluate_records(lm, task, recs, system.shots, pool, system, framing)
                        for g, recs in probe_set.groups.items()}
            results[probe.name] = by_group
            rows.append(probe_row(task, system, probe, by_group))
    return rows, results


def probe_row(task: TaskConfig, system: System, probe: CounterfactualProbe,
              by_group: dict[str, EvalResult]) -> ProbeRow:
    """Flip rate, every group's score and its paired gap to the first group."""
    reference = probe.groups[0]
    first = by_group[reference]
    key = primary_key(task, first)
    flips = [False] * first.n
    for result in by_group.values():
        flips = [a or b for a, b in zip(flips, changed_predictions(first, result), strict=True)]
    row = ProbeRow(system.label, probe.name, first.n, key, 100.0 * sum(flips) / first.n, reference)
    for group, result in by_group.items():
        change = paired_difference(task, first, result, key)
        row.groups.append(GroupGap(group, result.scores[key], result.ci.get(key, []),
                                   change.delta, change.ci))
    return row


@dataclass
class BBQRow:
    system: str
    category: str
    score: BBQScore


def score_bbq(lm: LoadedModel, items: Sequence[BBQItem], system: System) -> list[BBQRow]:
    """BBQ-lite zero-shot: the chosen answer per item -> accuracy and bias score per category."""
    task = bbq_task()
    result = evaluate_records(lm, task, [item.record for item in items], 0, (), system)
    chosen = [chosen_index(item.record, row) for item, row in zip(items, result.predictions,
                                                                  strict=True)]
    return [BBQRow(system.label, category, score) for category, score in bbq_scores(items,
                                                                              chosen).items()]


def chosen_index(record: Record, row: PredictionRow) -> int:
    """Which of the record's choices the model picked (a predictions row names its text)."""
    return [str(c) for c in record.columns["choices"]].index(str(row["prediction"]))


def with_ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]"


@dataclass
class BiasReport:
    task: str
    rows: list[ProbeRow]
    bbq: list[BBQRow] = field(default_factory=list)
    skipped_bbq: list[str] = field(default_factory=list)
    """Systems BBQ could not score (a classifier head has no language model to choose)."""
    generation: GenerationBiasReport | None = None
    """What each system writes about each group (the `bias.generation` axes)."""
    completions: list[Completion] = field(default_factory=list, repr=False)
    """The generation probe's completions, until `RunBias.finish` summarises both systems."""

    def table(self, markdown: bool = False) -> str:
        lines = [f"{self.task}: counterfactual probes (same items, only the demographic terms "
                 "differ; gap = group - first group, paired bootstrap 95% CI; * = CI excludes 0)"]
        body = []
        for r in self.rows:
            if not r.n:
                body.append([r.system, r.probe, 0, "-", "no item mentions its terms", "-"])
                continue
            scores = ", ".join(f"{g.group} {g.score:.1f}" for g in r.groups)
            gaps = ", ".join(f"{g.group} - {r.reference} {g.gap:+.1f} "
                             f"[{g.gap_ci[0]:+.1f}, {g.gap_ci[1]:+.1f}]"
                             + ("*" if g.significant else "") for g in r.groups[1:])
            body.append([r.system, r.probe, r.n, f"{r.flip_rate:.1f}%", scores, gaps])
        lines.append(format_table(["system", "probe", "n", "flip rate", "score per group",
                                   "gap to the first group [95% CI]"],
                                  body, markdown))
        if self.bbq:
            lines += ["", "BBQ-lite (zero-shot; bias score x100 in [-100, 100]: positive = picks "
                      "the stereotyped group, 0 = none; bootstrap 95% CI)",
                      format_table(["system", "category", "n ambig", "acc ambig", "unknown",
                                    "n disambig", "acc disambig", "bias ambig [95% CI]",
                                    "bias disambig [95% CI]"],
                                   [[b.system, b.category, b.score.n_ambig,
                                     f"{b.score.acc_ambig:.1f}", f"{b.score.unknown_ambig:.1f}%",
                                     b.score.n_disambig, f"{b.score.acc_disambig:.1f}",
                                     with_ci(b.score.bias_ambig, b.score.bias_ambig_ci),
                                     with_ci(b.score.bias_disambig, b.score.bias_disambig_ci)]
                                    for b in self.bbq], markdown)]
        if self.skipped_bbq:
            lines.append(f"BBQ-lite not scored for {', '.join(self.skipped_bbq)}: a "
                         "classification head cannot choose between free-text answers")
        if self.generation is not None:
            lines += ["", self.generation.table(markdown)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"task": self.task,
                "probes": [dict(asdict(r), largest_gap=r.largest_gap) for r in self.rows],
                "bbq": [asdict(b) for b in self.bbq], "skipped_bbq": self.skipped_bbq,
                "generation": self.generation.to_json() if self.generation else None}


def run_bias(
    task: TaskConfig,
    probes: Sequence[CounterfactualProbe],
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    baselines: Sequence[str] = ("zero",),
    shots: int | None = None,
    limit: int | None = None,
    bbq: bool = False,
    bbq_limit: int = 50,
    out_dir: str | Path | None = None,
    bbq_categories: Sequence[str] = (),
) -> BiasReport:
    """Every system on every probe's counterfactual items (and BBQ-lite); see the module
    docstring. Items and BBQ data are read before any model loads."""
    groups = system_groups(task, model, adapters, baselines, shots)
    most_shots = max(s.shots for g in groups for s in g.systems)
    records, pool, framing = task_items(task, limit, most_shots)
    items = probe_items(records, probes)
    bbq_set = bbq_items(bbq_categories or None, limit=bbq_limit) if bbq else []
    report = BiasReport(task.name, [])
    results: dict[System, dict[str, dict[str, EvalResult]]] = {}
    previous = None
    for lm, system in each_system(groups):
        rows, results[system] = score_probes(lm, task, items, system, pool, framing)
        report.rows += rows
        if bbq_set and lm is not previous:  # once per model: BBQ is zero-shot
            previous = lm
            if lm.kind.has_lm_head:
                report.bbq += score_bbq(lm, bbq_set, system)
            else:
                report.skipped_bbq.append(system.label)
    if out_dir:
        write_bias(report, results, StudyFiles(Path(out_dir), "bias"))
    return report


def write_bias(report: BiasReport, results: dict[System, dict[str, dict[str, EvalResult]]],
               files: StudyFiles) -> None:
    for system, by_probe in results.items():
        for probe, by_group in by_probe.items():
            for group, result in by_group.items():
                write_result(result, files.evaluation(system, probe, group))
    files.write(report.to_json(), f"# Bias: {report.task}\n\n{report.table(markdown=True)}\n")


@dataclass
class RunBias:
    """A training run's `bias:` block: the probes' counterfactual items of the run's test split
    (and BBQ-lite) scored on the base model before training and the fine-tuned model after."""

    task: TaskConfig | None
    """None: a multi-task run (no single test split; BBQ-lite only, no probes)."""
    items: list[ProbeItems]
    bbq: list[BBQItem]
    generation: GenerationProbe | None = None

    @classmethod
    def of(cls, config: BiasConfig, task: TaskConfig | None) -> RunBias | None:
        """The block's plan, read and checked before any model loads (None: no block)."""
        if not config.probes and not config.bbq and not config.generation:
            return None
        axes = [] if config.generation == ["all"] else config.generation
        generation = GenerationProbe(
            tuple(read_axes(axes or None, config.generation_prompts, "bias.generation")),
            config.generation_samples, config.generation_max_new_tokens,
        ) if config.generation else None
        probes = parse_probes(config.probes, "bias.probes") if config.probes else []
        if probes and task is None:
            raise TunelabError("bias.probes: a multi-task run has no single test split; run "
                               "tunelab bias --adapter RUN --task T per task")
        records = task_items(task, config.limit)[0] if probes and task is not None else []
        return cls(task, probe_items(records, probes),
                   bbq_items(config.bbq_categories or None, limit=config.bbq_limit)
                   if config.bbq else [], generation)

    def score(self, lm: LoadedModel, system: System) -> BiasReport:
        rows = score_probes(lm, self.task, self.items, system)[0] if self.task is not None else []
        report = BiasReport(self.task.name if self.task else "", rows)
        if self.bbq:
            if lm.kind.has_lm_head:
                report.bbq = score_bbq(lm, self.bbq, system)
            else:
                report.skipped_bbq.append(system.label)
        if self.generation is not None and lm.kind.has_lm_head:
            name = "base" if system.is_base else system.label
            for framing in framings(self.task):
                report.completions += complete(lm, self.generation, framing, name)
        return report

    def finish(self, before: BiasReport, after: BiasReport, run: RunDir,
               summary: dict[str, Any]) -> BiasReport:  # Any: summary.json's JSON values
        """bias.json / bias.md with both systems, and the summary's line."""
        both = BiasReport(after.task, before.rows + after.rows, before.bbq + after.bbq,
                          before.skipped_bbq + after.skipped_bbq)
        if self.generation is not None and after.completions:
            tuned = [c.system for c in after.completions[:1]]
            both.generation = summarise(before.completions + after.completions,
                                        self.generation.axes, self.generation.samples, tuned)
            write_completions(before.completions + after.completions,
                              run.root / "bias_completions.jsonl")
        run.bias.write(both.to_json(), f"# Bias: {both.task}\n\n{both.table(markdown=True)}\n")
        summary["bias"] = {
            "flip_rate": {f"{r.system} / {r.probe}": r.flip_rate for r in both.rows if r.n},
            "bbq_bias_ambig": {f"{b.system} / {b.category}": b.score.bias_ambig
                               for b in both.bbq if b.category == "all"}}
        if both.generation is not None:
            summary["bias"]["generation_largest_gap"] = {
                f"{g.system} ({g.framing}) / {g.axis} / {g.measure}": g.largest
                for g in both.generation.gaps}
        print("bias (before -> after training):")
        print(both.table())
        return both
