"""A tune's table and page (`tunelab tune`, `tunelab report TUNE_DIR`), built from tune.json:
how many configurations were tried (complete, pruned, failed), every trial, the optimisation
history, each trial's validation curve, the parameter importances, a parallel-coordinates plot,
and the best trial on the test split next to the base model's baselines (the gap between its
validation and test scores)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tunelab.core.plots import subplots
from tunelab.eval.tables import format_table
from tunelab.report.html import Block, Figure, Page, Section, Table, Text, curves, figure
from tunelab.runs import TuneDir

Results = Mapping[str, Any]  # Any: tune.json's JSON values


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def trial_columns(results: Results) -> tuple[list[str], list[list[object]]]:
    """The trials table's headers and cells (the terminal and report.html share them)."""
    keys = list(results["space"])
    headers = ["trial", "state", "value", *keys, "last step", "seconds", "note"]
    body: list[list[object]] = []
    for row in results["trials"]:
        steps = list(row["intermediate"])
        note = row.get("error") or (f"same as trial {row['same_as']}" if row.get("same_as")
                                    is not None else "") or (
            f"inactive for its method: {', '.join(row['inactive'])}" if row.get("inactive")
            else "")
        body.append([row["number"], row["state"], _number(row["value"]),
                     *[_number(row["params"].get(k)) for k in keys],
                     steps[-1] if steps else "-",
                     "-" if row.get("seconds") is None else f"{row['seconds']:.1f}", note])
    return headers, body


def summary_lines(results: Results) -> list[str]:
    """What was tried, the best trial, and its validation vs test score."""
    counts = results["counts"]
    tried = counts["complete"] + counts["pruned"] + counts["failed"]
    lines = [f"{tried} configurations tried: {counts['complete']} complete, "
             f"{counts['pruned']} pruned, {counts['failed']} failed"
             + (f" ({counts['running']} still running)" if counts["running"] else "")
             + f"; objective: validation {results['objective']} ({results['direction']})"]
    best, final = results.get("best"), results.get("final")
    if best is not None:
        params = ", ".join(f"{k}={_number(v)}" for k, v in best["params"].items())
        lines.append(f"best: trial {best['number']} ({params}), validation "
                     f"{results['objective']} {best['value']:.4g}")
    if final is not None:
        line = (f"test (trial {final['trial']}, {final['run_dir']}): {final['key']} "
                f"{final['test_score']:.4g}")
        if final.get("gap") is not None:
            line += (f"; validation {final['validation_of']} {final['validation']:.4g} vs test "
                     f"{final['test']:.4g} (gap {final['gap']:+.4g})")
        lines.append(line)
        comparison = final["comparison"].get("comparison")
        if comparison:
            lines.append(_comparison_sentence(comparison))
    return lines


def _comparison_sentence(c: Mapping[str, Any]) -> str:  # Any: comparison.json's values
    return (f"{c['candidate']} vs the best baseline ({c['best_baseline']}): {c['gain']:+.2f} "
            f"{c['key']}, paired bootstrap p = {c['p_value']:.3f}"
            + (" (significant)" if c["significant"] else " (not significant)"))


def tune_table(results: Results) -> str:
    """The terminal's view: the trials table, then the summary."""
    return "\n".join([format_table(*trial_columns(results)), *summary_lines(results)])


def tune_page(folder: Path) -> Page:
    results = json.loads(TuneDir(folder).results.read_text(encoding="utf-8"))
    complete = [r for r in results["trials"] if r["state"] == "complete"]
    search: list[Block] = [Text(line) for line in summary_lines(results)]
    if complete:
        search.append(history_plot(results["trials"], results["direction"],
                                   f"validation {results['objective']}"))
    curved = [r for r in results["trials"] if r["intermediate"]]
    if curved:
        search.append(curves([(f"trial {r['number']} ({r['state']})",
                               [int(s) for s in r["intermediate"]],
                               list(r["intermediate"].values())) for r in curved],
                             f"validation {results['objective']}", "Validation curves"))
    search.append(Table(*trial_columns(results)))
    sections = [Section("Search", search, "search")]
    params: list[Block] = []
    if results.get("importances"):
        params.append(importance_plot(results["importances"]))
    else:
        params.append(Text(results.get("importance_note") or "no importances", "note"))
    if len(complete) >= 2:
        params.append(parallel_plot(complete, results["space"], results["direction"]))
    sections.append(Section("Parameters", params, "parameters"))
    if results.get("final"):
        sections.append(Section("Best trial on the test split", final_blocks(results["final"]),
                                "test"))
    return Page(f"tunelab tune: {folder.name}",
                f"{len(results['trials'])} trials · {results['sampler']} sampler · "
                f"{results['pruner']} pruner · {folder.resolve()}", sections)


def final_blocks(final: Mapping[str, Any]) -> list[Block]:  # Any: tune.json's values
    """The best trial and the baselines on the same test items (TUNE/final/)."""
    key = final["key"]
    rows = []
    for system in final["comparison"]["systems"]:
        ci = system.get("ci", {}).get(key)
        score = system["scores"][key]
        rows.append([system["system"], system["shots"], system["n"],
                     f"{score:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")])
    blocks: list[Block] = [Table(["system", "shots", "n", f"{key} [95% CI]"], rows)]
    comparison = final["comparison"].get("comparison")
    if comparison:
        blocks.append(Text(_comparison_sentence(comparison)))
    blocks.append(Text(f"Scored once, after the search, as tunelab eval --baselines scores: "
                       f"{final['out_dir']}", "note"))
    return blocks


def history_plot(trials: Sequence[Results], direction: str, ylabel: str) -> Figure:
    """Each complete trial's value by trial number, and the best so far."""
    done = [(r["number"], float(r["value"])) for r in trials
            if r["state"] == "complete" and r["value"] is not None]
    pick = min if direction == "minimize" else max
    best, running = [], None
    for _, value in done:
        running = value if running is None else pick(running, value)
        best.append(running)
    fig, ax = subplots((5.0, 3.0))
    ax.scatter([n for n, _ in done], [v for _, v in done], s=20, label="trial")
    ax.step([n for n, _ in done], best, where="post", color="#c92a2a", label="best so far")
    if len(done) <= 20:
        ax.set_xticks([n for n, _ in done])
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure(fig, "Optimisation history")


def importance_plot(importances: Mapping[str, float]) -> Figure:
    """Optuna's parameter importances, largest on top."""
    names = list(importances)[::-1]
    fig, ax = subplots((5.0, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="#4c6ef5")
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.set_title("Parameter importances")
    ax.grid(axis="x", alpha=0.3)
    return figure(fig, "Parameter importances")


def _axis(values: Sequence[object], spec: object) -> tuple[list[float], str, str]:
    """Values placed on [0, 1] (log ranges in log space; lists by position), with the low
    and high end labels."""
    if isinstance(spec, list):
        index = [spec.index(v) if v in spec else 0 for v in values]
        top = max(len(spec) - 1, 1)
        return [i / top for i in index], str(spec[0]), str(spec[-1])
    log = isinstance(spec, dict) and spec.get("log")
    numbers = [math.log10(float(v)) if log else float(v) for v in values]  # type: ignore[arg-type]  # range values are numbers
    low, high = min(numbers), max(numbers)
    span = (high - low) or 1.0
    ends = (10 ** low, 10 ** high) if log else (low, high)
    return [(n - low) / span for n in numbers], f"{ends[0]:.3g}", f"{ends[1]:.3g}"


def parallel_plot(complete: Sequence[Results], space: Mapping[str, object],
                  direction: str) -> Figure:
    """Parallel coordinates: one line per complete trial across every parameter and the
    objective, coloured by the objective (brighter is better)."""
    import matplotlib

    keys = list(space)
    columns = [_axis([r["params"].get(k) for r in complete], space[k]) for k in keys]
    values = [float(r["value"]) for r in complete]
    columns.append(_axis(values, {}))
    shade, _, _ = _axis(values, {})
    if direction == "minimize":
        shade = [1 - s for s in shade]
    cmap = matplotlib.colormaps["viridis"]
    fig, ax = subplots((1.6 * len(columns) + 1.5, 3.4))
    xs = list(range(len(columns)))
    for i in range(len(complete)):
        ax.plot(xs, [column[0][i] for column in columns], color=cmap(shade[i]), alpha=0.8)
    for x, (_, low, high) in zip(xs, columns, strict=True):
        ax.axvline(x, color="#868e96", linewidth=0.8)
        ax.annotate(low, (x, 0), textcoords="offset points", xytext=(3, -12), fontsize=7)
        ax.annotate(high, (x, 1), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xticks(xs, [*keys, "objective"], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    ax.set_title("Parallel coordinates (brighter: better)")
    return figure(fig, "Parallel coordinates")
