"""`tunelab quickstart`: LoRA on the built-in model and task, against its own baselines.

Evaluates the base model zero-shot and few-shot (k examples from the train split, same
template), fine-tunes with LoRA, evaluates the fine-tuned model on the same held-out items,
and tests whether the gain over the best baseline is significant (paired bootstrap).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tunelab.config import Origin, RunConfig, from_dict, load_yaml, merge_overrides
from tunelab.eval.compare import compare_to_best, primary_key
from tunelab.eval.output_types import load_for_task
from tunelab.eval.runner import evaluate_loaded, write_result
from tunelab.eval.tables import results_table
from tunelab.report.markdown import examples_table, write_report
from tunelab.report.run_page import write_html_report
from tunelab.runs import RunDir, System
from tunelab.studies.error_analysis import compare_results
from tunelab.workflows.train import run_task, train

QUICKSTART_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"
SHOWN_KEYS = ("accuracy", "f1_macro", "invalid_rate")


def free_run_name(out_dir: Path, base: str) -> str:
    """base, base-2, base-3, ...: never overwrite an earlier quickstart."""
    name, n = base, 1
    while (out_dir / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def quickstart_config(out_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    raw = merge_overrides(load_yaml(QUICKSTART_CONFIG), overrides or [])
    config: RunConfig = from_dict(RunConfig, raw, str(QUICKSTART_CONFIG),
                                  Origin.of(QUICKSTART_CONFIG, overrides))
    config.output_dir = str(out_dir)
    config.name = free_run_name(out_dir, config.name)
    return config


def run_quickstart(out_dir: Path, limit: int | None = None, overrides: list[str] | None = None,
                   echo: Callable[[str], object] = print) -> Path:
    start = time.perf_counter()
    config = quickstart_config(out_dir, overrides)
    if limit:
        config.eval.limit = limit
    run_dir = config.run_dir
    run = RunDir(run_dir)
    task = run_task(config)
    shots = config.eval.shots
    echo(f"tunelab quickstart -> {run_dir}")
    echo(f"1/3 baselines: {config.model.name} zero-shot and with {shots} examples in the "
         "prompt, on the test split")
    lm = load_for_task(task, config.model)  # deferred where its answers are cached
    baselines = [
        evaluate_loaded(lm, task, System.base(0), shots=0, limit=config.eval.limit),
        evaluate_loaded(lm, task, System.base(shots), shots=shots, limit=config.eval.limit),
    ]
    for result in baselines:
        write_result(result, run.eval_dir(result.system))
    del lm
    echo(f"2/3 fine-tuning: {config.method['name']} on the train split")
    trained = train(config)
    assert trained.evaluation is not None
    results = [*baselines, trained.evaluation]
    keys = [k for k in SHOWN_KEYS if k in trained.evaluation.scores] or [
        next(iter(trained.evaluation.scores))]
    key = primary_key(task, trained.evaluation)
    comparison = compare_to_best(task, baselines, trained.evaluation, key)
    errors = compare_results(task, baselines[0], trained.evaluation)
    seconds = time.perf_counter() - start
    echo("3/3 results on the held-out test split")
    echo("")
    echo(results_table(results, keys))
    echo("")
    echo(comparison.sentence())
    echo("")
    echo(examples_table(results, 6, markdown=False))
    echo("")
    echo(f"error analysis (tunelab compare {run.eval_dir(baselines[0].system).root} "
         f"{run_dir}):")
    echo(errors.short_table())
    echo("")
    summary = trained.summary
    echo(f"trainable parameters: {summary['trainable_parameters']:,} "
         f"({summary['trainable_percent']:.2f}%), adapter on disk: "
         f"{summary['size_on_disk_bytes'] / 2**20:.1f} MiB, training: {summary['train_seconds']:.0f} s, "
         f"total: {seconds:.0f} s")
    setup = {
        "model": config.model.name, "task": f"{config.data.source} (template: {config.data.template})",
        "method": json.dumps(config.method), "train examples": summary["train_examples"],
        "steps": summary["steps"], "best validation loss": f"{summary['best_val_loss']:.4f} "
        f"(step {summary['best_step']})",
        "trainable parameters": f"{summary['trainable_parameters']:,} ({summary['trainable_percent']:.2f}%)",
        "size on disk": f"{summary['size_on_disk_bytes']:,} bytes",
    }
    write_report(run.report_md, "tunelab quickstart", setup, results, keys, comparison,
                 seconds, [("Error analysis: base 0-shot vs fine-tuned (tunelab compare)",
                            errors.table(markdown=True))])
    run.comparison.write_text(json.dumps({
        "key": key, "systems": {r.system.label: r.summary() for r in results},
        "best_baseline": comparison.best_baseline, "gain": comparison.gain,
        "p_value": comparison.p_value, "seconds": seconds}, indent=1, default=str))
    html = write_html_report(run_dir)
    echo(f"report: {run.report_md} and {html}")
    return run_dir
