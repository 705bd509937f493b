"""`tunelab combine RUN_A RUN_B ... --how linear|ties|dare_ties|cat [--weights W,...]
[--density D] --out RUN`: per-task LoRA adapters of one base combined into one, and measured
against each run it came from.

Top to bottom: read and check the source runs, the combination and --out (one line each,
nothing loaded or written) -> read every task's test split -> load the base once with every
source adapter (`AdapterSet`) -> peft's `add_weighted_adapter` -> score the combined adapter on
every source task's test split -> each source run on its own task's items (its stored
evaluation when it scored the same items, else scored now) -> the paired differences -> an
ordinary run directory, written in a staging folder that becomes --out in one rename:
config.yaml (the source runs' tasks as its tasks), adapter/ (peft's format), tokenizer/,
eval/fine-tuned/<task>/, summary.json (how, weights, source runs, parameters, size on disk),
report.md; then report.html in place. `tunelab eval`, `compare`, `export` and `predict
--task` take it as they take a multi-task run; its `data`/`eval` sections are its first task's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, TaskConfig, TrainConfig, TrainTaskConfig
from tunelab.core.errors import TunelabError
from tunelab.data.training_tasks import evaluation_task
from tunelab.eval.runner import EvalResult, evaluate_loaded, read_result, write_result
from tunelab.eval.tables import results_table, shown_keys
from tunelab.eval.tasks import TaskItems, read_task
from tunelab.methods.base import directory_size
from tunelab.models import load_model
from tunelab.report.run_page import write_html_report
from tunelab.runs import RunDir, System
from tunelab.runs.adapter_combination import (
    PEFT_CONFIG,
    Combination,
    SourceAdapter,
    adapter_parameters,
    check_sources,
    get_combination,
)
from tunelab.runs.adapter_set import AdapterSet
from tunelab.runs.merge import check_out_dir
from tunelab.studies.combined_adapters import (
    AdapterSize,
    CombineReport,
    against_source,
    same_items,
)

COMBINED = "combined"
"""The combined adapter's name in the AdapterSet (the sources': `CombinePlan.names`)."""


@dataclass
class CombineOptions:
    runs: list[Path]
    how: str
    out: Path
    weights: list[float] | None = None
    """One per run (default: 1.0 each, every adapter's whole update)."""
    density: float | None = None
    """ties, dare_ties: the share of entries kept (default 0.2)."""
    seed: int = 0
    """Seeds DARE's random drops."""
    limit: int | None = None
    """Score at most this many test items per task (default: each run's own eval.limit)."""


@dataclass
class ScoredTask:
    """One source task: its evaluation task, data, the run that trained it and the limit."""

    task: TaskConfig
    items: TaskItems
    source: SourceAdapter
    adapter: str
    """The source's name in the AdapterSet."""
    limit: int | None


@dataclass
class CombinePlan:
    """Everything checked before the base model loads."""

    options: CombineOptions
    combination: Combination
    sources: list[SourceAdapter]
    weights: list[float]
    density: float | None
    scored: list[ScoredTask]
    tasks: list[TrainTaskConfig]
    names: list[str]
    """Each source's adapter name in the AdapterSet."""


@dataclass
class CombineResult:
    run_dir: Path
    summary: dict[str, Any]  # Any: summary.json's JSON values
    report: CombineReport
    """The combined adapter against each source run, and every option's size."""
    evaluations: dict[str, EvalResult] = field(default_factory=dict)
    """The combined adapter's test evaluation per task."""


def combine_runs(options: CombineOptions) -> CombineResult:
    """Combine, score and write; see the module docstring."""
    start = time.perf_counter()
    plan = plan_combination(options)
    first = plan.sources[0]
    lm = load_model(first.config.model, labels=first.config.eval.labels)
    base_parameters = sum(p.numel() for p in lm.model.parameters())
    bank = AdapterSet(lm)
    for name, source in zip(plan.names, plan.sources, strict=True):
        bank.add(name, source.run.root)
    print(f"tunelab: combine: {len(plan.names)} adapters by {plan.combination.name} "
          f"(weights {plan.weights})")
    bank.add_combined(COMBINED, plan.names, plan.weights, plan.combination, plan.density,
                      options.seed)

    out = options.out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        run = RunDir(staging)
        weights_dir = run.weights(first.method)
        bank.save(COMBINED, weights_dir)
        bank.base.tokenizer.save_pretrained(str(run.tokenizer))
        config = combined_config(plan, json.loads((weights_dir / PEFT_CONFIG).read_text()))
        run.write_config(config)
        evaluations, report = score_tasks(bank, plan, run)
        report.sizes = sizes(plan, weights_dir)
        summary = combined_summary(plan, config, report, evaluations, base_parameters,
                                   weights_dir, time.perf_counter() - start)
        run.summary.write_text(json.dumps(summary, indent=1, default=str))
        run.report_md.write_text(report_markdown(config, summary, evaluations, report))
        if out.exists():
            out.rmdir()  # empty: checked before anything was loaded
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    write_html_report(out)  # in place: the page names its folder (`tunelab report` rebuilds it)
    return CombineResult(out, summary, report, evaluations)


def plan_combination(options: CombineOptions) -> CombinePlan:
    """Every option, run and task checked (one line each) before any model loads."""
    if len(options.runs) < 2:
        raise TunelabError(f"tunelab combine: give at least two runs to combine (got "
                           f"{len(options.runs)})")
    combination = get_combination(options.how)
    weights = options.weights if options.weights is not None else [1.0] * len(options.runs)
    if len(weights) != len(options.runs):
        raise TunelabError(f"--weights: {len(weights)} numbers for {len(options.runs)} runs; "
                           "give one weight per run, in the runs' order")
    if options.limit is not None and options.limit < 1:
        raise TunelabError(f"--limit {options.limit}: score at least 1 item, or leave --limit "
                           "out")
    check_out_dir(options.out)
    check_no_overlap(options.out, options.runs)
    sources = [SourceAdapter.read(run) for run in options.runs]
    check_sources(sources)
    density = combination.check(sources, options.density)
    scored, tasks = [], []
    names = [f"source{i}" for i in range(len(sources))]
    for name, source in zip(names, sources, strict=True):
        for task in source.tasks:
            evaluated = evaluation_task(task, source.config, "test")
            limit = options.limit or source.config.eval.limit or task.eval.limit
            scored.append(ScoredTask(evaluated, read_task(evaluated, 0), source, name, limit))
            tasks.append(task)
    return CombinePlan(options, combination, sources, weights, density, scored, tasks, names)


def combined_config(plan: CombinePlan,
                    peft_config: dict[str, Any]  # Any: adapter_config.json's JSON values
                    ) -> RunConfig:
    """The combined run's config: the sources' base and method with the combined adapter's
    rank, alpha and targets (as peft wrote them), the source runs' tasks as its tasks, and
    its first task as its `data`/`eval` sections (what `tunelab eval --task RUN` and
    `tunelab export` score). It trained nothing: `train` is the default."""
    first = plan.sources[0].config
    targets = peft_config["target_modules"]
    method = {**first.method, "r": peft_config["r"], "alpha": peft_config["lora_alpha"],
              "target_modules": sorted(targets) if isinstance(targets, list) else targets}
    out = plan.options.out
    return RunConfig(name=out.name, output_dir=str(out.parent), model=first.model,
                     data=plan.tasks[0].data, eval=plan.tasks[0].eval, method=method,
                     train=TrainConfig(), tasks=list(plan.tasks))


def score_tasks(bank: AdapterSet, plan: CombinePlan, run: RunDir
                ) -> tuple[dict[str, EvalResult], CombineReport]:
    """The combined adapter on every task (written to eval/fine-tuned/<task>/), each against
    the run that trained on it, on the same items."""
    evaluations = {}
    report = CombineReport(plan.combination.name)
    for scored in plan.scored:
        name, source_name = scored.task.name, scored.source.run.root.name
        print(f"tunelab: combine: scoring {name} ({scored.task.split} split)")
        with bank.use(COMBINED):
            combined = evaluate_loaded(bank.loaded(), scored.task, System.tuned(),
                                       limit=scored.limit, items=scored.items)
        write_result(combined, run.eval_dir(System.tuned()).task(name), scored.task)
        evaluations[name] = combined
        single = stored_evaluation(scored.source, name)
        if single is None or not same_items(single, combined):
            with bank.use(scored.adapter):
                single = evaluate_loaded(bank.loaded(), scored.task, System.tuned(source_name),
                                         limit=scored.limit, items=scored.items)
        report.rows.append(against_source(scored.task, source_name, single, combined))
    return evaluations, report


def stored_evaluation(source: SourceAdapter, task: str) -> EvalResult | None:
    """The test evaluation the source run wrote of `task`, if it has one."""
    folder = source.run.eval_dir(System.tuned())
    folder = folder.task(task) if source.config.is_mixture else folder
    return read_result(folder) if folder.exists() else None


def sizes(plan: CombinePlan, weights_dir: Path) -> list[AdapterSize]:
    """Each source adapter's and the combined adapter's parameters and bytes on disk."""
    rows = [AdapterSize(s.run.root.name, [t.name for t in s.tasks],
                        adapter_parameters(s.weights), directory_size(s.weights))
            for s in plan.sources]
    rows.append(AdapterSize(f"combined ({plan.combination.name})",
                            [t.name for t in plan.tasks], adapter_parameters(weights_dir),
                            directory_size(weights_dir)))
    return rows


def combined_summary(plan: CombinePlan, config: RunConfig, report: CombineReport,
                     evaluations: dict[str, EvalResult], base_parameters: int,
                     weights_dir: Path, seconds: float
                     ) -> dict[str, Any]:  # Any: summary.json's JSON values
    """summary.json: what was combined and how, its size, its scores and the comparison."""
    parameters = report.sizes[-1].parameters
    return {
        "method": config.method["name"],
        "model": config.model.name,
        "combined": {
            "how": plan.combination.name, "weights": plan.weights, "density": plan.density,
            "seed": plan.options.seed, "rank": config.method["r"],
            "runs": [str(s.run.root.resolve()) for s in plan.sources],
        },
        "trainable_parameters": parameters,
        "total_parameters": base_parameters + parameters,
        "trainable_percent": 100.0 * parameters / max(base_parameters + parameters, 1),
        "size_on_disk_bytes": directory_size(weights_dir),
        "seconds": seconds,
        "test_scores": {name: r.scores for name, r in evaluations.items()},
        **report.to_json(),
    }


def report_markdown(config: RunConfig,
                    summary: dict[str, Any],  # Any: summary.json's JSON values
                    evaluations: dict[str, EvalResult], report: CombineReport) -> str:
    """report.md: what was combined, each task's test scores, the comparison with each
    single-task run and every option's size."""
    combined = summary["combined"]
    density = f", density {combined['density']:g}" if combined["density"] is not None else ""
    lines = [f"# {config.name}: LoRA adapters combined ({combined['how']})", "",
             "## Setup", "",
             f"- how: {combined['how']}{density} (peft's add_weighted_adapter, seed "
             f"{combined['seed']})",
             f"- weights: {combined['weights']}",
             f"- source runs: {', '.join(combined['runs'])}",
             f"- model: {config.model.name}",
             f"- combined rank: {combined['rank']}",
             f"- trainable parameters: {summary['trainable_parameters']:,}",
             f"- size on disk: {summary['size_on_disk_bytes']:,} bytes", ""]
    for name, result in evaluations.items():
        lines += [f"## Test split: {name}", "",
                  results_table([result], shown_keys(result.scores), True), ""]
    lines += ["## Against each single-task run (its own task, paired)", "",
              "Each source run and the combined adapter on the same test items; change = "
              "combined - single-task with a paired-bootstrap 95% CI; p: the chance the "
              "combined adapter is not better.", "", report.table(markdown=True), "",
              "## Size of each option", "", report.size_table(markdown=True), ""]
    return "\n".join(lines)


def check_no_overlap(out: Path, runs: list[Path]) -> None:
    """--out is none of the source runs (nor inside one)."""
    for run in runs:
        if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
            raise TunelabError(f"--out {out}: lies in source run {run}; choose a new directory "
                               "outside the runs (nothing is overwritten)")
