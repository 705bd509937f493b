"""The run report (report.md): setup, the comparison table, significance and examples."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.eval.compare import Comparison
from tunelab.eval.harm import HARM_SCORERS, HarmRates
from tunelab.eval.runner import EvalResult
from tunelab.eval.tables import format_table, results_table, shown_keys
from tunelab.runs import RunDir
from tunelab.studies import domain
from tunelab.studies.retention import RetentionRow, retention_table
from tunelab.studies.stage_matrix import STAGE_NOTE, stage_table

if TYPE_CHECKING:
    from tunelab.config import RunConfig
    from tunelab.studies.bias import BiasReport
    from tunelab.studies.robustness import RobustnessReport


def examples_table(results: Sequence[EvalResult], count: int, markdown: bool = True) -> str:
    """The first `count` test items (not cherry-picked) with every system's prediction."""
    first = results[0].predictions[:count]
    headers = ["input", "reference", *[r.system.label for r in results]]
    rows = []
    for i, row in enumerate(first):
        prompt = _short(row.get("input") or row["prompt"], 70)
        rows.append([prompt, row["reference"], *[_short(r.predictions[i]["prediction"], 40)
                                                  for r in results]])
    return format_table(headers, rows, markdown)


def harm_note(results: Sequence[EvalResult]) -> list[str]:
    """What the harm column of a results table counts (no lines when it has none)."""
    if not any(r.harm for r in results):
        return []
    scorers = ", ".join(f"{s.flag_name} ({s.description})" for s in HARM_SCORERS)
    return [f"{HarmRates.header()}: percent of the outputs each scorer flags: {scorers}; "
            "see eval/harm.py.", ""]


def _short(text: str, width: int) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def write_report(
    path: Path,
    title: str,
    summary: Mapping[str, object],
    results: Sequence[EvalResult],
    keys: Sequence[str],
    comparison: Comparison | None,
    seconds: float,
    sections: Sequence[tuple[str, str]] = (),
) -> None:
    """report.md of the quickstart; `sections` are (heading, Markdown body) added after the
    examples."""
    lines = [f"# {title}", ""]
    lines += ["## Setup", ""]
    lines += [f"- {k}: {v}" for k, v in summary.items()]
    lines += ["", "## Results on the held-out test split", "", results_table(results, keys, True), "",
              *harm_note(results)]
    if comparison:
        lines += [comparison.sentence(), ""]
    lines += ["Metric signatures:", ""]
    for name, sig in results[0].signatures.items():
        lines.append(f"- {name}: `{sig}`")
    lines += ["", "## Examples (the first test items, not selected)", "",
              examples_table(results, 8), ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", body, ""]
    lines += [f"Total wall time: {seconds:.0f} s", ""]
    path.write_text("\n".join(lines))


def write_run_report(run: RunDir, config: RunConfig,
                     summary: dict[str, Any],  # Any: summary.json's JSON values
                     evaluation: EvalResult | None, task_evaluations: dict[str, EvalResult],
                     retention_rows: Sequence[RetentionRow],
                     robustness: RobustnessReport | None = None,
                     bias: BiasReport | None = None) -> None:
    """report.md of a `tunelab train` run: setup, the evaluation curve, test scores, the domain
    text before -> after (raw-text runs), forgetting, robustness to noisy input and
    counterfactual bias (before vs after training)."""
    lines = [f"# {config.name}", "", "## Setup", ""]
    for key in ("method", "model", "trainable_parameters", "trainable_percent",
                "size_on_disk_bytes", "steps", "train_seconds", "tokens_per_s", "tokens_seen",
                "computed_tokens", "padding_share", "peak_memory_mb", "best_val_loss", "best_step", "stopped_early", "out_of_time"):
        value = summary.get(key)
        lines.append(f"- {key}: {f'{value:.4g}' if isinstance(value, float) else value}")
    lines += ["", "## Evaluations during training", "", _curve_table(run), ""]
    if evaluation is not None:
        lines += ["## Test split", "", results_table([evaluation], shown_keys(evaluation.scores),
                                                     True), "", *harm_note([evaluation])]
    for name, result in task_evaluations.items():
        lines += [f"## Test split: {name}", "",
                  results_table([result], shown_keys(result.scores), True), "",
                  *harm_note([result])]
    lines += domain_lines(summary)
    lines += stage_lines(summary)
    if retention_rows:
        retention = summary.get("retention", {})
        limit = retention.get("max_forgetting")
        verdict = ("no limit set (retention.max_forgetting)" if limit is None else
                   f"{'passed' if retention.get('passed') else 'FAILED'}: worst forgetting "
                   f"{retention.get('worst_forgetting', 0):.2f} against a limit of {limit:g}")
        drops = [r.task for r in retention_rows if r.significant_drop]
        lines += ["## Retention (forgetting)", "",
                  "The same items scored by the base model before training and by the trained "
                  "model after; change with a paired-bootstrap 95% CI. Forgetting is points lost "
                  "(0-100 scores) or the relative increase in percent (lower-is-better scores).",
                  "", retention_table(retention_rows, markdown=True), "",
                  f"Significant drops: {', '.join(drops) if drops else 'none'}. Verdict: {verdict}.",
                  ""]
    if robustness is not None:
        lines += ["## Robustness (noisy input)", "",
                  "The same test items clean and perturbed, scored by the base model (before) "
                  "and the fine-tuned model (after); change = after drop - before drop "
                  "(positive: fine-tuning made the model less brittle), paired bootstrap 95% CI.",
                  "", robustness.brittleness_table(markdown=True), "",
                  robustness.table(markdown=True), "", "![robustness](robustness/robustness.png)",
                  ""]
    if bias is not None:
        lines += ["## Bias (counterfactual probes)", "", bias.table(markdown=True), ""]
    run.report_md.write_text("\n".join(lines))


def domain_lines(summary: dict[str, Any]) -> list[str]:  # Any: summary.json's JSON values
    """The held-out domain documents before -> after training (a raw-text run; else none)."""
    rows = domain.rows_of(summary)
    if not rows:
        return []
    better = summary["domain"].get("significantly_better") or []
    return ["## Domain text (held-out documents, before -> after)", "",
            f"The run's held-out documents scored by "
            f"{summary['domain'].get('before', 'the base model')} before training and by the "
            "trained model after (rolling windows of data.max_length tokens); change with a "
            "paired bootstrap over documents, 95% CI. What the same run cost elsewhere is the "
            "forgetting table below (retention).", "",
            domain.domain_table(rows, markdown=True), "",
            f"Significantly better: {', '.join(better) if better else 'none'}.", ""]


def _curve_table(run: RunDir) -> str:
    log = run.train_log
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    evals = [r for r in records if "val_loss" in r]
    if not evals:
        return "(no evaluation steps)"
    tasks = sorted({t for r in evals for t in r.get("retention", {})})
    rows = [[r["step"], f"{r['val_loss']:.4f}",
             *[f"{r['retention'][t]:.3f}" if t in r.get("retention", {}) else "-" for t in tasks]]
            for r in evals]
    return format_table(["step", "val loss", *[f"retention: {t}" for t in tasks]], rows, True)


def stage_lines(summary: dict[str, Any]) -> list[str]:  # Any: summary.json's JSON values
    """Where a model.init_from run started and its stage x task matrix (else no lines)."""
    start = summary.get("init_from")
    if not start:
        return []
    lines = ["## Stages (model.init_from)", "", f"This run: {start['how']}.", ""]
    if summary.get("stages"):
        lines += [format_table(*stage_table(summary["stages"]), markdown=True), "", STAGE_NOTE,
                  ""]
    return lines
