"""The sweep's table and its score-vs-trainable-parameters plot (sweep.md and report.html share
them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from tunelab.core.plots import save_png, subplots
from tunelab.eval.tables import format_table


class _SweepRowKeys(TypedDict):
    method: str
    lr: float
    ok: bool


class SweepRow(_SweepRowKeys, total=False):
    """One method's row of sweep.json: a failed run has `error`; a finished one its summary's
    numbers, its task score where it was evaluated, and its retention changes."""

    error: str
    """The end of the failed run's log."""
    reason: str
    """The failed run's one-line reason (its `tunelab: error:` line)."""
    notes: list[str]
    """What was turned off for this method alone (e.g. data.packing for prompt tuning)."""
    trainable_parameters: int
    trainable_percent: float
    size_on_disk_bytes: int
    peak_memory_mb: float
    tokens_per_s: float | None
    best_val_loss: float | None
    steps: int
    train_seconds: float
    metric: str
    score: float
    retention: dict[str, float]
    """Retention task -> after minus before."""
    worst_forgetting: float


def sweep_table(rows: Sequence[SweepRow], markdown: bool = True) -> str:
    """One row per method; one change column per retention task (after minus before); then
    the notes (`sweep_notes`), one line each."""
    table, notes = format_table(*sweep_columns(rows), markdown), sweep_notes(rows)
    return f"{table}\n\n" + "\n".join(notes) if notes else table


def sweep_notes(rows: Sequence[SweepRow]) -> list[str]:
    """A line for each thing turned off for one method, and for each failed method its
    reason."""
    lines = [f"{r['method']}: {note}" for r in rows for note in r.get("notes", [])]
    return lines + [f"{r['method']}: failed: {r.get('reason', 'see its log')}"
                    for r in rows if not r["ok"]]


def sweep_columns(rows: Sequence[SweepRow]) -> tuple[list[str], list[list[object]]]:
    """The sweep table's headers and cells (the Markdown table and report.html share them)."""
    kept = [t for r in rows for t in r.get("retention", {})]
    kept = list(dict.fromkeys(kept))
    headers = ["method", "trainable", "%", "size on disk", "peak MiB", "tokens/s", "val loss",
               "task score", *[f"Δ {t}" for t in kept], "steps", "train s"]
    body: list[list[object]] = []
    for r in rows:
        if not r["ok"]:
            body.append([r["method"], "failed", *["-"] * (len(headers) - 2)])
            continue
        body.append([
            r["method"], f"{r['trainable_parameters']:,}", f"{r['trainable_percent']:.3f}",
            _size(r["size_on_disk_bytes"]), f"{r['peak_memory_mb']:.0f}",
            f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else "-",
            f"{r['best_val_loss']:.4f}" if r.get("best_val_loss") is not None else "-",
            f"{r['score']:.2f} ({r['metric']})" if "score" in r else "-",
            *[f"{r['retention'][t]:+.3f}" if t in r.get("retention", {}) else "-" for t in kept],
            r["steps"], f"{r['train_seconds']:.0f}"])
    return headers, body


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def plot_score_vs_params(rows: Sequence[SweepRow], path: Path) -> None:
    """Task score against trainable parameters (log scale), one labelled point per method."""
    points = [r for r in rows if r["ok"] and "score" in r]
    if not points:
        return
    fig, ax = subplots((6, 4))
    for r in points:
        ax.scatter(r["trainable_parameters"], r["score"])
        ax.annotate(r["method"], (r["trainable_parameters"], r["score"]),
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(points[0]["metric"])
    ax.set_title("task score vs trainable parameters")
    save_png(fig, path)
