"""Plain-text and Markdown tables of evaluation results (comparisons: eval/compare.py)."""

from __future__ import annotations

from collections.abc import Sequence

from tunelab.eval.harm import HarmRates
from tunelab.eval.metrics import on_own_scale
from tunelab.eval.runner import EvalResult


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                 markdown: bool = False) -> str:
    """Aligned columns; Markdown pipes when markdown=True."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
                 for r in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def with_ci(result: EvalResult, key: str) -> str:
    value = result.scores.get(key)
    if value is None:
        return "-"
    low_high = result.ci.get(key)
    small = on_own_scale(key)  # MCC, bits per byte, nats: more digits than percentages
    if not low_high:
        return f"{value:.3f}" if small else f"{value:.2f}"
    if small:
        return f"{value:.3f} [{low_high[0]:.3f}, {low_high[1]:.3f}]"
    return f"{value:.2f} [{low_high[0]:.1f}, {low_high[1]:.1f}]"


def shown_keys(scores: dict[str, float], limit: int = 8) -> list[str]:
    """The headline keys of a result: no per-label or micro-averaged breakdowns."""
    hidden = ("precision_macro", "recall_macro", "precision_micro", "recall_micro", "f1_micro")
    return [k for k in scores if "[" not in k and k not in hidden][:limit]


def results_table(results: Sequence[EvalResult], keys: Sequence[str], markdown: bool = False,
                  task_column: bool = False) -> str:
    """One row per system: scores with 95% CIs, mean prompt tokens and the tokens shots use;
    the share of harmful outputs when some system wrote free text (eval/harm.py)."""
    harm = any(r.harm for r in results)
    headers = [*(["task"] if task_column else []), "system", "shots", "n",
               *[f"{k} [95% CI]" for k in keys], "context tokens", "shot tokens",
               *([HarmRates.header()] if harm else [])]
    rows = [[*([r.task] if task_column else []), r.system.label, r.shots, r.n,
             *[with_ci(r, k) for k in keys], f"{r.mean_context_tokens:.0f}",
             f"{r.mean_shot_tokens:.0f}" + (f" ({r.dropped_shots} dropped)" if r.dropped_shots else ""),
             *([r.harm.cell() if r.harm else "-"] if harm else [])]
            for r in results]
    return format_table(headers, rows, markdown)


def suite_table(results: Sequence[EvalResult], markdown: bool = False) -> str:
    """One row per task of a suite: its headline score with a 95% CI (and the share of
    harmful outputs when some task wrote free text)."""
    harm = any(r.harm for r in results)
    rows = []
    for r in results:
        key = shown_keys(r.scores, 1)[0]
        rows.append([r.task, r.output_type, r.system.label, r.n, key, with_ci(r, key),
                     f"{r.mean_context_tokens:.0f}", f"{r.mean_shot_tokens:.0f}",
                     *([r.harm.cell() if r.harm else "-"] if harm else [])])
    return format_table(["task", "output type", "system", "n", "score", "value [95% CI]",
                         "context tokens", "shot tokens", *([HarmRates.header()] if harm else [])],
                        rows, markdown)
