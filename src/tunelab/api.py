"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.config import ModelConfig, TaskConfig, load_run_config
from tunelab.config.choices import NONNEGATIVE, Range
from tunelab.core.deferred import deferred
from tunelab.core.errors import TunelabError
from tunelab.data.transforms.counterfactual import parse_probes
from tunelab.data.transforms.perturbations import parse_perturbations
from tunelab.deploy.verify import ExportCheck
from tunelab.eval.datasets.group_prompts import read_axes
from tunelab.eval.output_types import get_output_type, load_for_task
from tunelab.eval.runner import EvalResult, evaluate_loaded, write_result
from tunelab.eval.scoring import format_scores, score
from tunelab.eval.tables import format_table, results_table, shown_keys, suite_table
from tunelab.eval.tasks import is_suite, load_suite, load_task, read_task, task_of
from tunelab.eval.tasks import validate_task as validate_task_file
from tunelab.models import LoadedModel
from tunelab.models.loader import load_tokenizer
from tunelab.report.task_list import tasks_overview
from tunelab.runs import (
    EvalDir,
    RunDir,
    System,
    ratings_file,
    read_config,
    scoring_run_model,
)
from tunelab.runs.adapter_set import AdapterSet
from tunelab.runs.merge import merge_run
from tunelab.studies.baselines import BaselineReport, run_baselines
from tunelab.studies.bias import BiasReport, run_bias
from tunelab.studies.error_analysis import (
    ComparisonReport,
    compare_tasks,
    export_errors,
)
from tunelab.studies.generation_bias import (
    GenerationBiasReport,
    GenerationProbe,
    generation_systems,
    run_generation_bias,
)
from tunelab.studies.pairing import compared_task, pair_evaluations
from tunelab.studies.robustness import RobustnessReport, run_robustness
from tunelab.workflows.sweep import SweepOptions
from tunelab.workflows.sweep import run_sweep as run_sweep_options
from tunelab.workflows.train import TrainResult, check_train, run_task, train

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

    from tunelab.data import inspect as inspecting
    from tunelab.deploy import predict as predicting
    from tunelab.deploy import serve as serving
    from tunelab.eval.datasets import fetch as fetching
    from tunelab.eval.datasets.fetch import FetchResult
    from tunelab.human import report as rating_report
    from tunelab.human import server as rating_server
    from tunelab.human import session as rating_session
    from tunelab.human import store as rating_store
    from tunelab.human.report import RatingsReport
    from tunelab.human.session import RatingSession
    from tunelab.report import data_report, run_page
    from tunelab.workflows import combine as combining
    from tunelab.workflows import data_check as checking
    from tunelab.workflows import export as exporting
    from tunelab.workflows import quickstart as quickstarting
    from tunelab.workflows import tune as tuning
    from tunelab.workflows.combine import CombineResult
    from tunelab.workflows.tune import ObjectiveName, Pruner, Sampler
else:  # loaded by the command that uses them: `tunelab tasks list` needs none
    inspecting = deferred("tunelab.data.inspect")
    predicting = deferred("tunelab.deploy.predict")
    serving = deferred("tunelab.deploy.serve")
    fetching = deferred("tunelab.eval.datasets.fetch")
    rating_store = deferred("tunelab.human.store")
    rating_report = deferred("tunelab.human.report")
    rating_server = deferred("tunelab.human.server")
    rating_session = deferred("tunelab.human.session")
    data_report = deferred("tunelab.report.data_report")
    run_page = deferred("tunelab.report.run_page")
    combining = deferred("tunelab.workflows.combine")
    checking = deferred("tunelab.workflows.data_check")
    exporting = deferred("tunelab.workflows.export")
    quickstarting = deferred("tunelab.workflows.quickstart")
    tuning = deferred("tunelab.workflows.tune")

__all__ = ["train", "check_train", "run_task", "evaluate", "evaluate_task", "evaluate_adapters",
           "compare_baselines", "evaluate_suite", "Printout", "score", "format_scores",
           "quickstart", "data_inspect", "data_check", "tasks_validate", "tasks_list", "data_fetch", "merge",
           "combine",
           "predict",
           "sweep", "tune", "harness", "robustness", "bias", "task_of", "perturbations_overview",
           "probes_overview", "compare", "ratings", "rate", "build_report", "TrainResult"]


def check_eval_args(shots: int | None, limit: int | None, out_dir: str | Path | None = None
                    ) -> None:
    """--shots, --limit and --out in one line each, before any work: 0 or more shots, at
    least one item, an output directory that is one (or can be made)."""
    NONNEGATIVE.check("--shots", shots)
    Range(1, whole=True, fix="leave --limit out to score the whole split").check("--limit", limit)
    if out_dir is None:
        return
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TunelabError(f"--out {out}: is a file; give a directory (metrics.json and "
                           "predictions.jsonl are written into it)")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise TunelabError(f"--out {out}: {parent} is not writable; choose another directory")


def evaluate_task(
    task: str | TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Evaluate a model (optionally with a trained run's weights) on a task.

    Args:
        task: a built-in task name or a task YAML file (or a TaskConfig).
        model: base model spec; defaults to the adapter run's base, else the built-in model.
        adapter: a run directory from `tunelab train` whose weights are applied to the base.
        shots: in-context examples per prompt, from the task's few-shot split (default 0).
        limit: score at most this many examples.
        out_dir: where to write metrics.json and predictions.jsonl.
    """
    check_eval_args(shots, limit, out_dir)
    task_config = task_of(task)
    shots = shots or 0
    items = read_task(task_config, shots)  # read and checked once, before a model loads
    if adapter:
        lm = scoring_run_model(adapter, base=model)
        system = System.tuned(Path(adapter).name, shots)
    else:
        lm = load_for_task(task_config, ModelConfig(name=model or ModelConfig().name))
        system = System.base(shots)
    result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit, items=items)
    if out_dir:
        write_result(result, Path(out_dir), task_config)  # remembers the task (compare)
    return result


def evaluate_adapters(
    task: str | TaskConfig,
    adapters: list[str | Path] | dict[str, str | Path],
    model: str | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    include_base: bool = True,
) -> list[EvalResult]:
    """Score several runs of one base on a task, loading the base once where their adapters
    can share it (AdapterSet), else each run alone (a full fine-tune, a merged start, adapters
    of different types); the base alone first when include_base. Runs are named by their
    directory."""
    check_eval_args(shots, limit, out_dir)

    task_config = task_of(task)
    items = read_task(task_config, shots or 0)
    runs = adapters if isinstance(adapters, dict) else {Path(a).name: a for a in adapters}
    if len(runs) != len(adapters):
        raise TunelabError("--adapter: two runs share a directory name; pass a dict of names")
    shots = shots or 0
    results = []

    def scored(name: str | None, lm: LoadedModel) -> None:
        system = System.named_adapter(name, shots) if name else System.base(shots)
        result = evaluate_loaded(lm, task_config, system, shots=shots, limit=limit, items=items)
        results.append(result)
        if out_dir:
            write_result(result, EvalDir(Path(out_dir) / (name or "base")), task_config)
    if AdapterSet.can_share(runs.values()):
        bank = AdapterSet.from_runs(runs, base=model)
        for name in ([None] if include_base else []) + list(runs):
            with bank.use(name):
                scored(name, bank.loaded())
        return results
    first = read_config(Path(next(iter(runs.values())))).model
    if include_base:
        scored(None, load_for_task(task_config, replace(first, name=model or first.name)))
    for name, run_dir in runs.items():  # one model in memory at a time
        scored(name, scoring_run_model(run_dir, base=model))
    return results


def compare_baselines(
    task: str | TaskConfig,
    model: str | None = None,
    adapter: str | Path | None = None,
    baselines: list[str] | tuple[str, ...] = ("zero", "few"),
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> BaselineReport:
    """Base model zero-/few-shot vs the fine-tuned run on the same items, with a paired test.

    Args:
        baselines: zero, one, few (the task's fewshot.k, or `shots`), or numbers of shots.
        adapter: the fine-tuned run; without it the last baseline is tested against the rest.
        out_dir: per-system metrics.json + predictions.jsonl, and comparison.json.
    """
    check_eval_args(shots, limit, out_dir)
    return run_baselines(task_of(task), model, adapter, list(baselines), shots, limit, out_dir)


def evaluate_suite(
    suite: str,
    model: str | None = None,
    adapter: str | Path | None = None,
    shots: int | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> list[EvalResult]:
    """Evaluate one model on every task of a suite (one model load; `tunelab tasks list`)."""
    check_eval_args(shots, limit, out_dir)

    tasks = [load_task(name) for name in load_suite(suite).tasks]
    shots = shots or 0
    system = System.tuned(Path(adapter).name, shots) if adapter else System.base(shots)
    results, lm = [], None
    for task in tasks:
        items = read_task(task, shots)  # before its model loads
        if get_output_type(task.output_type).needs_head and not adapter:
            lm_task = load_for_task(task, ModelConfig(name=model or ModelConfig().name))
        else:
            lm = lm or (scoring_run_model(adapter, base=model) if adapter else
                        load_for_task(task, ModelConfig(name=model or ModelConfig().name)))
            lm_task = lm
        result = evaluate_loaded(lm_task, task, system, shots=shots, limit=limit, items=items)
        results.append(result)
        if out_dir:
            write_result(result, EvalDir(Path(out_dir) / task.name), task)
    return results


def quickstart(out_dir: str | Path = "runs", limit: int | None = None,
               overrides: list[str] | None = None, echo: Callable[[str], object] = print) -> Path:
    """Fine-tune the built-in model with LoRA on the built-in sentiment task and compare it
    with its own zero- and few-shot baselines. Returns the run directory."""
    check_eval_args(0, limit)

    return quickstarting.run_quickstart(Path(out_dir), limit=limit, overrides=overrides, echo=echo)


@dataclass
class Printout:
    """What a command shows: a table for people, or the same results as JSON."""

    text: str
    data: object
    """The results as JSON-serialisable values (`json.dumps`)."""

    def render(self, as_json: bool) -> str:
        return json.dumps(self.data, indent=1, default=str) if as_json else self.text


def evaluate(
    task: str,
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    shots: int | None = None,
    baselines: Sequence[str] | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> Printout:
    """`tunelab eval`: one task or a suite; one run's weights or several on one base; with or
    without base-model baselines. Picks the call above that fits and lays out its results."""
    check_eval_args(shots, limit, out_dir)
    names = load_suite(task).tasks if is_suite(task) else [task]
    if len(adapters) > 1:
        if baselines or len(names) > 1:
            raise TunelabError("several --adapter options score one task (no --baselines, no "
                               "suite); run once per task")
        results = evaluate_adapters(task, list(adapters), model=model, shots=shots, limit=limit,
                                    out_dir=out_dir)
        return Printout(results_table(results, shown_keys(results[0].scores)),
                        [r.summary() for r in results])
    adapter = adapters[0] if adapters else None
    if baselines:
        reports = [compare_baselines(
            name, model=model, adapter=adapter, baselines=list(baselines), shots=shots, limit=limit,
            out_dir=Path(out_dir) / Path(name).stem if out_dir and len(names) > 1 else out_dir)
            for name in names]
        return Printout("\n\n".join(r.table() for r in reports),
                        [r.to_json() for r in reports] if len(reports) > 1 else reports[0].to_json())
    if len(names) > 1:
        results = evaluate_suite(task, model=model, adapter=adapter, shots=shots, limit=limit,
                                 out_dir=out_dir)
        return Printout(suite_table(results), [r.summary() for r in results])
    result = evaluate_task(task, model=model, adapter=adapter, shots=shots, limit=limit,
                           out_dir=out_dir)
    return Printout(results_table([result], shown_keys(result.scores)), result.summary())


def data_inspect(config: str | Path, overrides: list[str] | None = None, count: int = 3,
                 split: str = "train") -> str:
    """`tunelab data inspect`: templated examples with the trained tokens marked, per task."""
    return inspecting.inspect_data(load_run_config(config, overrides), count, split)


def data_check(target: str | Path, overrides: Sequence[str] = (), against: Sequence[str] = (),
               fix: str | Path | None = None, out: str | Path | None = "data_check.json",
               threshold: float | None = None, label_errors: bool = True,
               fields: dict[str, str] | None = None) -> Printout:
    """`tunelab data check`: duplicates, near duplicates, 13-gram overlap and conflicting
    labels within and across the splits and every scored benchmark (and each `against` task),
    quality, likely label errors; `out`: data_check.json; `fix`: a copy without duplicates and
    leaked items; `fields`: a data file's column mapping (as data.fields). The Printout's data
    is data_check.json's content."""
    check = checking.data_check(target, overrides, against, fix, out, threshold, label_errors, fields)
    figures = check.to_json()
    return Printout(data_report.check_table(figures), figures)


def tasks_validate(task: str, model: str | None = None) -> str:
    """`tunelab tasks validate`: check a task file and its data (`model`: a tokenizer for chat
    templates)."""
    return validate_task_file(task, load_tokenizer(ModelConfig(name=model)) if model else None)


def sweep(config: str | Path, overrides: list[str], methods: list[str], max_steps: int = 0,
          max_seconds: float = 0, lr: dict[str, float] | None = None, resume: bool = False,
          retention: list[str] | None = None) -> Path:
    """`tunelab sweep`: every method on the same data and budget; returns the sweep directory."""
    options = SweepOptions(methods=methods, max_steps=max_steps, max_seconds=max_seconds,
                           lr=lr or {}, resume=resume, retention=retention)
    sweep_dir = run_sweep_options(str(config), overrides, options)
    run_page.write_html_report(sweep_dir)
    return sweep_dir


def tune(config: str | Path, overrides: list[str] | None = None, *, space: str | Path,
         trials: int, timeout: float = 0, workers: int = 1, storage: str | None = None,
         sampler: Sampler = "tpe", pruner: Pruner = "median", objective: ObjectiveName = "loss",
         baselines: Sequence[str] = ("zero", "few"), worker: int | None = None) -> Path:
    """`tunelab tune`: a hyperparameter search over the config keys in `space` (Optuna),
    every trial scored on the validation split only; then the best trial on test, once, next
    to the base model's baselines. Returns the tune directory (tune.json, report.html).

    Args:
        space: a YAML file of config keys -> lists or {low, high[, log, step]} ranges.
        trials: finished (complete or pruned) trials in total, over every process.
        timeout: seconds after which no new trial starts (0: none).
        workers: worker processes on the same study.
        storage: the study's database URL (default: sqlite:///<tune dir>/study.sqlite).
        objective: loss (best validation loss) or metric (the task's primary metric).
        worker: set by the worker processes `workers` starts (trials only).
    """
    options = tuning.TuneOptions(space=str(space), trials=trials, timeout=timeout, workers=workers,
                          storage=storage, sampler=sampler, pruner=pruner, objective=objective,
                          baselines=list(baselines), worker=worker)
    return tuning.run_tune(str(config), list(overrides or []), options)


def build_report(directory: str | Path) -> Path:
    """`tunelab report DIR`: rebuild DIR/report.html (a run, a sweep, a tune or an eval
    directory)."""
    return run_page.write_html_report(directory)


def harness(tasks: list[str], model: str | None = None, adapter: str | None = None,
            include_path: str | None = None, shots: int | None = None, limit: int | None = None,
            batch_size: int = 8, apply_chat_template: bool | str = False,
            output: str | Path | None = None, log_samples: bool = False,
            max_length: int | None = None) -> str:
    """`tunelab harness`: lm-evaluation-harness tasks on a tunelab model (the `harness` extra);
    `output` gets lm-eval's results JSON and, with `log_samples`, each task's samples JSONL.
    Its options are checked before lm-eval loads, its task names before the model does."""
    tasks = [task.strip() for task in tasks if task.strip()]
    check_eval_args(shots, limit)
    Range(1, whole=True, fix="e.g. 8").check("--batch-size", batch_size)
    Range(1, whole=True, fix="leave it out for the model's own").check("--max-length", max_length)
    if not tasks:
        raise TunelabError("--tasks: no task named; e.g. --tasks hellaswag,arc_easy")
    if include_path is not None and not Path(include_path).exists():
        raise TunelabError(f"--include_path {include_path}: no such file or folder; give the "
                           "folder of your task YAML files")
    if adapter is not None:
        RunDir(Path(adapter)).read_config()  # not a run: one line, before lm-eval loads
    if log_samples and output is None:
        raise TunelabError("--log-samples: the samples are written beside the results; "
                           "add --output DIR")
    if output is not None and Path(output).is_file() and Path(output).suffix != ".json":
        raise TunelabError(f"--output {output}: is a file; give a directory (or a .json path)")
    try:  # lm-evaluation-harness is an optional extra
        from tunelab.eval.harness import run_harness
    except ImportError as err:
        raise TunelabError(f"tunelab harness needs lm-evaluation-harness ({err}); run: "
                           "pip install -c constraints.txt 'tunelab[harness]'") from None
    return run_harness(tasks, model=model, adapter=adapter, include_path=include_path,
                       shots=shots, limit=limit, batch_size=batch_size,
                       apply_chat_template=apply_chat_template,
                       output=str(output) if output is not None else None, log_samples=log_samples,
                       max_length=max_length)


def robustness(
    task: str | TaskConfig | None = None,
    perturbations: str | Sequence[str] = "all",
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    baselines: Sequence[str] = ("zero", "few"),
    severities: Sequence[float] = (0.1,),
    shots: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    instruction: bool = False,
    out_dir: str | Path | None = None,
) -> RobustnessReport:
    """`tunelab robustness`: every system on the task's items, clean and under each
    perturbation (see tunelab.studies.robustness)."""
    check_eval_args(shots, limit, out_dir)
    chosen = parse_perturbations(perturbations)  # an unknown name fails before any loading
    return run_robustness(task_of(task, adapters), chosen, model=model, adapters=adapters,
                          baselines=baselines, severities=severities, shots=shots, limit=limit,
                          seed=seed, instruction=instruction, out_dir=out_dir)


def bias(
    task: str | TaskConfig | None = None,
    probes: str | Sequence[str] = "all",
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
    """`tunelab bias`: counterfactual probes on the task's items for every system, and the
    BBQ-lite suite with `bbq=True` (see tunelab.studies.bias)."""
    check_eval_args(shots, limit, out_dir)
    chosen = parse_probes(probes)
    return run_bias(task_of(task, adapters), chosen, model=model, adapters=adapters,
                    baselines=baselines, shots=shots, limit=limit, bbq=bbq, bbq_limit=bbq_limit,
                    out_dir=out_dir, bbq_categories=bbq_categories)


def generation_bias(
    task: str | TaskConfig | None = None,
    groups: Sequence[str] | None = ("gender", "race", "religion"),
    model: str | None = None,
    adapters: Sequence[str | Path] = (),
    base: bool = True,
    samples: int = 3,
    max_new_tokens: int = 24,
    seed: int = 0,
    group_prompts: str | Path | None = None,
    out_dir: str | Path | None = None,
) -> GenerationBiasReport:
    """`tunelab bias --generation`: what the base model (raw, and in the task's template when a
    task is known) and each adapter run write after prompts that name a group, scored for
    sentiment, offensive language and hurtful words, per group with CIs, the gaps between
    groups and each fine-tune against the base (see tunelab.studies.generation_bias).

    Args:
        groups: axes of the prompt file (None: all).
        base: also the base model (False: the adapters only).
        group_prompts: a prompt file of your own (default: tunelab's).
    """
    probe = GenerationProbe(tuple(read_axes(groups, group_prompts)), samples, max_new_tokens,
                            seed)
    check_eval_args(None, None, out_dir)
    chosen = task_of(task, adapters) if task or adapters else None
    return run_generation_bias(probe, chosen, generation_systems(model, adapters, base), out_dir)


def perturbations_overview() -> str:
    """`tunelab robustness --list`: every perturbation and what it does."""
    return format_table(["perturbation", "what it does"],
                        [[p.name, p.description] for p in parse_perturbations("all")])


def probes_overview() -> str:
    """`tunelab bias --list`: every counterfactual probe, its groups and what it swaps."""
    return format_table(["probe", "groups", "what it swaps"],
                        [[p.name, ", ".join(p.groups), p.description] for p in parse_probes("all")])


def compare(
    a: str | Path,
    b: str | Path,
    task: str | TaskConfig | None = None,
    robustness: str | Path | None = None,
    export: str | Path | None = None,
    examples: int = 5,
    html: str | Path | None = None,
    pass_at: float | None = None,
    export_top: int | None = None,
) -> ComparisonReport:
    """`tunelab compare A B`: two evaluations of the same items (eval dirs, or runs: their
    fine-tuned evaluation, every task of a mixture), item by item (see tunelab.studies.error_analysis).

    Args:
        task: the task that scored them (default: the task the evaluation's metrics.json
            records, as `tunelab eval --out` writes it; else the run's own task, found from a
            config.yaml beside the evaluation; else the built-in task of that name).
        robustness: a `tunelab robustness --out` directory whose consistency.jsonl marks the
            items whose prediction changes under noise (default: a run's robustness/).
        export: write B's errors here as training data (JSONL): the still-wrong and broken
            items; for a graded score (ROUGE, BLEU, chrF, F1) with no `pass_at`, B's
            `export_top` worst items (default: the worst quarter), worst first.
        html: write the comparison as a self-contained HTML page here.
        pass_at: the line of right for a graded score, on its own scale (ROUGE-L 30); without
            it graded items are ranked by their paired difference, not called right or wrong.
    """
    if html is not None and (Path(html).is_dir() or not Path(html).resolve().parent.is_dir()):
        raise TunelabError(f"--html {html}: give a file in an existing directory, e.g. "
                           "compare.html")
    if export_top is not None and not export:
        raise TunelabError(f"--export-top {export_top}: says how many items --export writes; "
                           "add --export FILE or leave it out")
    pairs, tasks, labels = pair_evaluations(a, b, task, robustness)
    report = compare_tasks(pairs, labels, examples=examples, pass_at=pass_at,
                           export_top=export_top)
    if export:
        export_errors(report, tasks, export)
    if html:
        run_page.comparison_page(report, [p.a for p in pairs], [p.b for p in pairs]).render(html)
    return report


def ratings(directory: str | Path, reference: str | None = None,
                  import_csv: str | Path | None = None,
                  export_csv: str | Path | None = None) -> RatingsReport:
    """`tunelab ratings DIR`: the ratings in DIR/ratings.sqlite (after merging `import_csv`)
    set against each rated system's evaluation in DIR (a run's eval/<system>/ or DIR/<system>/)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such directory; give the run or eval directory that "
                           "was rated")
    store = rating_store.RatingStore(ratings_file(folder))
    if import_csv:
        store.import_csv(import_csv)
    if export_csv:
        store.export_csv(export_csv)
    systems_dir, results = rating_session.system_results(folder)
    task = None
    if results:
        first = next(iter(results.values()))
        try:
            task = compared_task(first.task, None, [systems_dir / first.system.slug])
        except TunelabError:
            task = None  # no run config and no built-in task: no metric correlations
    report = rating_report.ratings_report(store, task, results, reference)
    if task is None:
        report.note = (f"no metric correlations: {folder} holds no evaluation with a run config "
                       "or a built-in task to score it" if results else
                       f"no metric correlations: no evaluation (metrics.json) in {systems_dir}")
    return report


def rate(directory: str | Path, systems: Sequence[str] | None = None,
                  criteria: Sequence[str] | None = None, criteria_file: str | Path | None = None,
                  scale: int = 5, pairwise: bool = False, show_reference: bool = False,
                  limit: int | None = None, rater: str | None = None, host: str = "127.0.0.1",
                  port: int = 8765, seed: int = 0) -> tuple[BaseWSGIServer, RatingSession]:
    """`tunelab rate DIR`: the bound (not yet serving) rating server and its session; ratings
    go to DIR/ratings.sqlite. A store already rated on another scale or other systems is
    refused, so one file never mixes two sessions' scales."""
    session = rating_session.open_session(directory, systems, criteria, criteria_file, scale, pairwise,
                           show_reference, limit, seed)
    if pairwise and len(session.systems) != 2:
        raise TunelabError(f"--pairwise: compares exactly two systems, not "
                           f"{len(session.systems)}; pass --systems A,B")
    store = rating_store.RatingStore(session.ratings)
    rated = store.meta("scale")
    if rated is not None and int(rated) != scale:
        raise TunelabError(f"{store.path}: rated on a {rated}-point scale; --scale {scale} "
                           f"would mix scales (pass --scale {rated}, or rate into a copy)")
    store.set_meta("scale", str(scale))
    return rating_server.serve(session, store, host, port, rater), session


def tasks_list() -> str:
    """`tunelab tasks list`: the built-in tasks and suites as tables."""
    return tasks_overview()


def data_fetch(tasks: Sequence[str] | None = None, sdist: str | Path | None = None,
               every_task: bool = False) -> FetchResult:
    """`tunelab data fetch bigbench`: BIG-bench's task files into the cache, once."""
    return fetching.fetch_bigbench(list(tasks) if tasks is not None else None, sdist, every_task)


def merge(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`tunelab merge RUN --out DIR`: the run's weights merged into a plain HF model directory."""
    return merge_run(run_dir, out_dir)


def combine(runs: Sequence[str | Path], how: str, out: str | Path,
            weights: Sequence[float] | None = None, density: float | None = None, seed: int = 0,
            limit: int | None = None) -> CombineResult:
    """`tunelab combine RUN_A RUN_B ... --how linear|ties|dare_ties|cat --out RUN`: per-task
    LoRA runs of one base combined into one adapter by peft's `add_weighted_adapter`, written
    as a run directory (its tasks: the runs' tasks) and scored on every task's test split
    against the run that trained on it, paired (see tunelab.workflows.combine).

    Args:
        weights: one per run (default 1.0 each).
        density: ties, dare_ties: the share of entries kept (default 0.2).
        seed: seeds DARE's random drops.
        limit: score at most this many test items per task (default: each run's eval.limit).
    """
    return combining.combine_runs(combining.CombineOptions([Path(r) for r in runs], how, Path(out),
                                       list(weights) if weights is not None else None, density,
                                       seed, limit))


def predict(run_dir: str | Path, input_file: str | Path, out_file: str | Path | None = None,
            limit: int | None = None, task: str | None = None) -> Path:
    """`tunelab predict RUN --input FILE [--out FILE] [--limit N]`: the run's predictions on
    new inputs (JSONL, CSV, Parquet; no answers needed), every row kept with `prediction` (and
    a classifier's `probabilities`) added; returns the written file (default
    `<input stem>.predictions<suffix>` beside the input). `task`: which task of a multi-task
    run (a mixture, a `tunelab combine` run) predicts."""
    return predicting.predict_file(run_dir, input_file, out_file, limit, task)


def export(run_dir: str | Path, format: str, out_dir: str | Path, quant: str | None = None,
           max_drop: float | None = None, limit: int | None = None) -> ExportCheck:
    """`tunelab export RUN --format hf|gguf [--quant f16,q8_0] --out DIR [--max-drop P]`: the
    merged fine-tune written for an engine and scored by it against the fine-tune (paired);
    raises ExportDropError (exit 1) when an artefact lost more than max_drop points."""
    Range(1, whole=True, fix="leave --limit out to check on every test item").check("--limit",
                                                                                   limit)
    return exporting.export_run(run_dir, format, out_dir, quant, max_drop, limit)


def serve(path: str | Path, engine: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, quant: str | None = None) -> None:
    """`tunelab serve RUN|EXPORT [--engine llamacpp|transformers|vllm] [--quant q8_0]`: an
    OpenAI-compatible endpoint on an existing engine, with the run's chat template and
    generation defaults (`quant`: which GGUF file of the export)."""
    serving.serve(path, engine, host, port, quant)
