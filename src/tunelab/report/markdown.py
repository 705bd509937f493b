"""The run report (report.md): setup, the comparison table, significance and examples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.eval.runner import EvalResult
from tunelab.report.tables import Comparison, format_table, results_table


def examples_table(results: Sequence[EvalResult], count: int, markdown: bool = True) -> str:
    """The first `count` test items (not cherry-picked) with every system's prediction."""
    first = results[0].predictions[:count]
    headers = ["input", "reference", *[r.system for r in results]]
    rows = []
    for i, row in enumerate(first):
        prompt = _short(row.get("input") or row["prompt"], 70)
        rows.append([prompt, row["reference"], *[_short(r.predictions[i]["prediction"], 40)
                                                  for r in results]])
    return format_table(headers, rows, markdown)


def _short(text: str, width: int) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def write_report(
    path: Path,
    title: str,
    summary: dict[str, Any],
    results: Sequence[EvalResult],
    keys: Sequence[str],
    comparison: Comparison | None,
    seconds: float,
) -> None:
    lines = [f"# {title}", ""]
    lines += ["## Setup", ""]
    lines += [f"- {k}: {v}" for k, v in summary.items()]
    lines += ["", "## Results on the held-out test split", "", results_table(results, keys, True), ""]
    if comparison:
        lines += [comparison.sentence(), ""]
    lines += ["Metric signatures:", ""]
    for name, sig in results[0].signatures.items():
        lines.append(f"- {name}: `{sig}`")
    lines += ["", "## Examples (the first test items, not selected)", "",
              examples_table(results, 8), "", f"Total wall time: {seconds:.0f} s", ""]
    path.write_text("\n".join(lines))
