"""The sweep's table and its score-vs-trainable-parameters plot (sweep.md and report.html share
them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.eval.tables import format_table


def sweep_table(rows: list[dict[str, Any]], markdown: bool = True) -> str:
    """One row per method; one change column per retention task (after minus before)."""
    return format_table(*sweep_columns(rows), markdown)


def sweep_columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The sweep table's headers and cells (the Markdown table and report.html share them)."""
    kept = [t for r in rows for t in r.get("retention", {})]
    kept = list(dict.fromkeys(kept))
    headers = ["method", "trainable", "%", "size on disk", "peak MiB", "tokens/s", "val loss",
               "task score", *[f"Δ {t}" for t in kept], "steps", "train s"]
    body = []
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


def plot_score_vs_params(rows: list[dict[str, Any]], path: Path) -> None:
    """Task score against trainable parameters (log scale), one labelled point per method."""
    points = [r for r in rows if r["ok"] and "score" in r]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in points:
        ax.scatter(r["trainable_parameters"], r["score"])
        ax.annotate(r["method"], (r["trainable_parameters"], r["score"]),
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(points[0]["metric"])
    ax.set_title("task score vs trainable parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
