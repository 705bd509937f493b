"""`tunelab bias --generation`: what each system writes about each group, and how hurtful.

    the prompt file's axes (eval/datasets/group_prompts.py: one prompt per template and group,
    aligned so only the group's terms differ) -> for every system and framing: K completions
    per prompt (sample 0 greedy, samples 1.. sampled with seeds seed+1..) -> every completion
    scored by the text scorers (eval/harm.py: VADER sentiment, offensive, hurtful) -> per
    system x axis x group: mean sentiment and the shares negative / offensive / hurtful, each
    with a bootstrap CI over the prompts -> per system x axis x score: the largest gap between
    two groups and each group against the axis mean, tested by permuting the group labels
    within each template (scipy.stats.permutation_test) -> each fine-tune against the base in
    the same framing, per group, paired by prompt (sign-flip permutation test, bootstrap CI)
    -> generation_bias.json / .md and completions.jsonl.

Framings (`PromptFraming`): `raw` continues the prompt text as it is (what the model writes
freely); `task` puts the prompt in the task's template as the task's input (what the model
writes in use: for the base model this is "the base with the task's instruction").
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tunelab.config import GenerationConfig, ModelConfig, TaskConfig
from tunelab.core.deferred import deferred, stats
from tunelab.core.errors import TunelabError
from tunelab.data.sources import input_record, source_scheme
from tunelab.eval.datasets.group_prompts import Axis, GroupPrompt
from tunelab.eval.harm import SCORERS, TextScorer
from tunelab.eval.output_types import Request
from tunelab.eval.tables import format_table
from tunelab.models import LoadedModel, get_kind, load_model
from tunelab.runs import RunDir, read_config
from tunelab.runs.run_dir import StudyFiles

if TYPE_CHECKING:
    from tunelab.eval import generation as eval_generation
else:  # it uses torch as it is imported
    eval_generation = deferred("tunelab.eval.generation")

RESAMPLES = 2000
"""Bootstrap resamples and permutations (seeded)."""
TEMPERATURE, TOP_P = 0.8, 0.95
"""How samples 1.. are drawn (sample 0 is greedy)."""


@dataclass(frozen=True)
class GenerationProbe:
    """What to generate: the axes' prompts, K completions each, at most max_new_tokens."""

    axes: tuple[Axis, ...]
    samples: int = 3
    max_new_tokens: int = 24
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise TunelabError(f"--samples {self.samples}: give 1 or more completions per "
                               "prompt (1 = greedy only)")
        if self.max_new_tokens < 1:
            raise TunelabError(f"--max-new-tokens {self.max_new_tokens}: give 1 or more")

    @property
    def prompts(self) -> list[GroupPrompt]:
        return [p for axis in self.axes for p in axis.prompts()]

    def generation(self, sample: int) -> GenerationConfig:
        """Sample 0 greedy, sample s >= 1 sampled with seed + s."""
        return GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=sample > 0,
                                temperature=TEMPERATURE, top_p=TOP_P,
                                batch_size=self.batch_size, seed=self.seed + sample)


@dataclass(frozen=True)
class PromptFraming:
    """How a prompt reaches the model (see the module docstring)."""

    name: str
    task: TaskConfig | None = None

    def token_ids(self, lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
        if self.task is None:
            return [list(lm.tokenizer(t).input_ids) for t in texts]
        data = self.task.data
        instruction = data.instruction or source_scheme(data.source).instruction(data.source)
        records = [input_record({data.fields.get("input", "input"): t}, "group prompt",
                                data.fields, instruction) for t in texts]
        request = Request(lm, self.task, records)
        builder = request.prompt_builder()
        budget = request.context_limit - self.task.eval.generation.max_new_tokens
        return [list(builder.build(r, [], budget).ids) for r in records]


def framings(task: TaskConfig | None) -> list[PromptFraming]:
    """raw always; task when a task is known (its template around the prompt)."""
    return [PromptFraming("raw"), *([PromptFraming("task", task)] if task is not None else [])]


@dataclass
class Completion:
    system: str
    framing: str
    axis: str
    group: str
    template: int
    sample: int
    prompt: str
    text: str
    scores: dict[str, float]


def complete(lm: LoadedModel, probe: GenerationProbe, framing: PromptFraming, system: str
             ) -> list[Completion]:
    """Every prompt's K completions, scored (deterministic for a seed)."""
    prompts = probe.prompts
    ids = framing.token_ids(lm, [p.text for p in prompts])
    out = []
    for sample in range(probe.samples):
        texts = eval_generation.generate(lm.model, lm.tokenizer, ids, probe.generation(sample),
                         desc=f"{system} ({framing.name}) sample {sample}")
        values = {s.name: _values(s, texts, prompts) for s in SCORERS}
        out += [Completion(system, framing.name, p.axis, p.group, p.template, sample, p.text,
                           text, {name: values[name][i] for name in values})
                for i, (p, text) in enumerate(zip(prompts, texts, strict=True))]
    return out


def _values(scorer: TextScorer, texts: Sequence[str], prompts: Sequence[GroupPrompt]
            ) -> list[float]:
    """Each text's value, its prompt's group terms not counted against it."""
    out = [0.0] * len(texts)
    by_terms: dict[tuple[str, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_terms.setdefault(prompt.terms, []).append(i)
    for terms, indices in by_terms.items():
        for i, value in zip(indices, scorer.values([texts[i] for i in indices], terms),
                            strict=True):
            out[i] = value
    return out


# ---- statistics ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """One figure per completion, averaged per prompt: a scorer's value (mean sentiment) or
    its flag (the share negative / offensive / hurtful, in percent)."""

    name: str
    scorer: TextScorer
    flag: bool

    def of(self, completion: Completion) -> float:
        value = completion.scores[self.scorer.name]
        return 100.0 * self.scorer.flagged(value) if self.flag else value

    @property
    def unit(self) -> str:
        return "%" if self.flag else ""


MEASURES = (Measure("sentiment", SCORERS[0], False),
            *(Measure(s.flag_name, s, True) for s in SCORERS))


def per_prompt(completions: Sequence[Completion], measure: Measure, groups: Sequence[str]
               ) -> np.ndarray:
    """[template, group] the prompt's mean over its K completions."""
    templates = sorted({c.template for c in completions})
    at = {t: i for i, t in enumerate(templates)}
    column = {g: j for j, g in enumerate(groups)}
    total = np.zeros((len(templates), len(groups)))
    count = np.zeros_like(total)
    for c in completions:
        total[at[c.template], column[c.group]] += measure.of(c)
        count[at[c.template], column[c.group]] += 1
    return total / np.maximum(count, 1)


def bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean over prompts."""
    if len(values) < 2 or np.all(values == values[0]):
        return float(np.mean(values)), float(np.mean(values))
    found = stats.bootstrap((values,), np.mean, n_resamples=RESAMPLES, method="percentile",
                            random_state=np.random.default_rng(seed))
    return float(found.confidence_interval.low), float(found.confidence_interval.high)


def permutation_p(columns: Sequence[np.ndarray], statistic: Callable[..., float],
                  seed: int = 0, alternative: str = "two-sided") -> float:
    """p of `statistic` with group labels permuted within each template (paired samples:
    scipy enumerates every permutation when they number fewer than RESAMPLES); two-sided
    for a signed statistic, "greater" for one that is never negative (the largest gap)."""
    if all(np.array_equal(columns[0], c) for c in columns[1:]):
        return 1.0
    found = stats.permutation_test(tuple(columns), statistic, permutation_type="samples",
                                   n_resamples=RESAMPLES, alternative=alternative,
                                   vectorized=False, random_state=np.random.default_rng(seed))
    return float(found.pvalue)


def p_text(p: float) -> str:
    """A permutation p as printed: '<0.001' below what 2000 permutations can show."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def largest_gap(*columns: np.ndarray) -> float:
    means = [float(np.mean(c)) for c in columns]
    return max(means) - min(means)


def against_mean(index: int) -> Callable[..., float]:
    """Group `index`'s mean minus the mean of all groups (per template, then averaged)."""
    def statistic(*columns: np.ndarray) -> float:
        return float(np.mean(columns[index] - np.mean(np.stack(columns), axis=0)))
    return statistic


def mean_difference(after: np.ndarray, before: np.ndarray) -> float:
    return float(np.mean(after - before))


@dataclass
class GroupRow:
    system: str
    framing: str
    axis: str
    group: str
    measure: str
    prompts: int
    completions: int
    value: float
    ci: tuple[float, float]


@dataclass
class GapRow:
    system: str
    framing: str
    axis: str
    measure: str
    largest: float
    """The highest group mean minus the lowest."""
    between: tuple[str, str]
    """(highest, lowest) group."""
    p_value: float
    """Permutation test of the largest gap (group labels permuted within templates)."""
    against_mean: dict[str, tuple[float, float]] = field(default_factory=dict)
    """group -> (its mean minus the axis mean, permutation p)."""


@dataclass
class ChangeRow:
    system: str
    base: str
    framing: str
    axis: str
    group: str
    measure: str
    before: float
    after: float
    delta: float
    ci: tuple[float, float]
    p_value: float


@dataclass
class GenerationBiasReport:
    samples: int
    groups: list[GroupRow] = field(default_factory=list)
    gaps: list[GapRow] = field(default_factory=list)
    changes: list[ChangeRow] = field(default_factory=list)

    def table(self, markdown: bool = False) -> str:
        lines = [f"Generation bias ({self.samples} completion(s) per prompt: greedy"
                 f"{' + sampled' if self.samples > 1 else ''}; mean per prompt, 95% bootstrap "
                 "CI over prompts; sentiment = VADER compound, shares in %)"]
        rows = []
        for key, members in _by(self.groups, lambda r: (r.system, r.framing, r.axis, r.group)):
            system, framing, axis, group = key
            cells = {r.measure: f"{r.value:+.2f} [{r.ci[0]:+.2f}, {r.ci[1]:+.2f}]"
                     if r.measure == "sentiment" else f"{r.value:.1f} [{r.ci[0]:.1f}, {r.ci[1]:.1f}]"
                     for r in members}
            rows.append([system, framing, axis, group, members[0].prompts,
                         *[cells.get(m.name, "-") for m in MEASURES]])
        lines.append(format_table(["system", "framing", "axis", "group", "prompts",
                                   *[m.name for m in MEASURES]], rows, markdown))
        lines += ["", "Gaps between groups (largest: highest - lowest group mean; p: the "
                  "group labels permuted within each template)",
                  format_table(["system", "framing", "axis", "measure", "largest gap", "p",
                                "each group - axis mean (p)"],
                               [[g.system, g.framing, g.axis, g.measure,
                                 f"{g.largest:.2f} ({g.between[0]} - {g.between[1]})",
                                 p_text(g.p_value),
                                 ", ".join(f"{k} {v[0]:+.2f} ({p_text(v[1])})"
                                           for k, v in g.against_mean.items())]
                                for g in self.gaps], markdown)]
        if self.changes:
            lines += ["", "Fine-tune - base, per group (same prompts and framing; paired by "
                      "prompt: bootstrap 95% CI, sign-flip permutation p)",
                      format_table(["system", "vs", "framing", "axis", "group", "measure",
                                    "before", "after", "change [95% CI]", "p"],
                                   [[c.system, c.base, c.framing, c.axis, c.group, c.measure,
                                     f"{c.before:.2f}", f"{c.after:.2f}",
                                     f"{c.delta:+.2f} [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]",
                                     p_text(c.p_value)] for c in self.changes], markdown)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"samples": self.samples, "measures": [m.name for m in MEASURES],
                "groups": [asdict(r) for r in self.groups],
                "gaps": [asdict(g) for g in self.gaps],
                "changes": [asdict(c) for c in self.changes]}


def _by(rows: Sequence[GroupRow], key: Callable[[GroupRow], tuple[str, ...]]
        ) -> list[tuple[tuple[str, ...], list[GroupRow]]]:
    grouped: dict[tuple[str, ...], list[GroupRow]] = {}
    for row in rows:
        grouped.setdefault(key(row), []).append(row)
    return list(grouped.items())


def summarise(completions: Sequence[Completion], axes: Sequence[Axis], samples: int,
              tuned: Sequence[str] = (), seed: int = 0) -> GenerationBiasReport:
    """Per-group figures, gaps and each tuned system's change against every base system in
    the same framing (`tuned`: the fine-tuned systems' names)."""
    report = GenerationBiasReport(samples)
    cells: dict[tuple[str, str, str, str], np.ndarray] = {}
    systems = list(dict.fromkeys((c.system, c.framing) for c in completions))
    for system, framing in systems:
        for axis in axes:
            mine = [c for c in completions if (c.system, c.framing, c.axis) ==
                    (system, framing, axis.name)]
            if not mine:
                continue
            groups = list(axis.groups)
            for measure in MEASURES:
                table = per_prompt(mine, measure, groups)
                cells[(system, framing, axis.name, measure.name)] = table
                for j, group in enumerate(groups):
                    report.groups.append(GroupRow(
                        system, framing, axis.name, group, measure.name, table.shape[0],
                        sum(c.group == group for c in mine), float(np.mean(table[:, j])),
                        bootstrap_ci(table[:, j], seed)))
                report.gaps.append(gap_row(system, framing, axis.name, measure.name, groups,
                                           table, seed))
    for system, framing in systems:
        if system not in tuned:
            continue
        for base, base_framing in systems:
            if base in tuned or base_framing != framing:
                continue
            for axis in axes:
                for measure in MEASURES:
                    after = cells.get((system, framing, axis.name, measure.name))
                    before = cells.get((base, framing, axis.name, measure.name))
                    if after is None or before is None:
                        continue
                    for j, group in enumerate(axis.groups):
                        difference = after[:, j] - before[:, j]
                        report.changes.append(ChangeRow(
                            system, base, framing, axis.name, group, measure.name,
                            float(np.mean(before[:, j])), float(np.mean(after[:, j])),
                            float(np.mean(difference)), bootstrap_ci(difference, seed),
                            permutation_p([after[:, j], before[:, j]], mean_difference, seed)))
    return report


def gap_row(system: str, framing: str, axis: str, measure: str, groups: Sequence[str],
            table: np.ndarray, seed: int = 0) -> GapRow:
    columns = [table[:, j] for j in range(len(groups))]
    means = [float(np.mean(c)) for c in columns]
    order = np.argsort(means, kind="stable")  # equal means: two groups still, gap 0
    high, low = int(order[-1]), int(order[0])
    row = GapRow(system, framing, axis, measure, means[high] - means[low],
                 (groups[high], groups[low]),
                 permutation_p(columns, largest_gap, seed, alternative="greater"))
    for j, group in enumerate(groups):
        row.against_mean[group] = (against_mean(j)(*columns),
                                   permutation_p(columns, against_mean(j), seed))
    return row


def write_generation_bias(report: GenerationBiasReport, completions: Sequence[Completion],
                          out_dir: Path) -> None:
    """generation_bias.json / .md and every completion with its scores (completions.jsonl)."""
    StudyFiles(out_dir, "generation_bias").write(
        report.to_json(), f"# Generation bias\n\n{report.table(markdown=True)}\n")
    write_completions(completions, out_dir / "completions.jsonl")


def write_completions(completions: Sequence[Completion], path: Path) -> None:
    """Every completion with its prompt and scores, one JSON object per line."""
    path.write_text("".join(json.dumps(asdict(c), ensure_ascii=False) + "\n"
                            for c in completions), encoding="utf-8")


@dataclass
class GenerationSystem:
    """One model to load and the name its completions carry."""

    name: str
    load: Callable[[], LoadedModel]
    tuned: bool


def generation_systems(model: str | None, adapters: Sequence[str | Path],
                       base: bool = True) -> list[GenerationSystem]:
    """The base model (unless `base` is False), then every adapter run, nothing loaded yet."""
    first = Path(adapters[0]) if adapters else None
    config = ModelConfig(name=model) if model else (
        read_config(first).model if first else ModelConfig())
    for run in map(Path, adapters):  # each run's kind decides, before anything loads
        kind = get_kind(read_config(run).model.kind)
        if not kind.has_lm_head:
            raise TunelabError(f"{run.name}: a {kind.name} model has no language-model head to "
                               "write with; --generation needs a causal or seq2seq model")
    systems = [GenerationSystem("base", partial(load_model, config), False)] if base else []
    systems += [GenerationSystem(Path(a).name, partial(RunDir(Path(a)).scoring_model, model),
                                 True)  # sampled: nothing is looked up, so loaded now
                for a in adapters]
    if not systems:
        raise TunelabError("--baselines none: give --adapter RUN, or keep the base model")
    return systems


def run_generation_bias(probe: GenerationProbe, task: TaskConfig | None,
                        systems: Sequence[GenerationSystem], out_dir: str | Path | None = None
                        ) -> GenerationBiasReport:
    """Every system in every framing on the probe's prompts; see the module docstring."""
    completions: list[Completion] = []
    for system in systems:
        lm = system.load()
        if not lm.kind.has_lm_head:
            raise TunelabError(f"{system.name}: a {lm.kind.name} model has no language-model "
                               "head to write with; --generation needs a causal or seq2seq "
                               "model")
        for framing in framings(task):
            completions += complete(lm, probe, framing, system.name)
        del lm
        gc.collect()
    report = summarise(completions, probe.axes, probe.samples,
                       [s.name for s in systems if s.tuned], probe.seed)
    if out_dir is not None:
        write_generation_bias(report, completions, Path(out_dir))
    return report
