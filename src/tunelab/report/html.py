"""Self-contained HTML reports: sections of text, tables, inline plots and an example table.

A `Page` is a title and a list of `Section`s; each section holds blocks (`Table`, `Figure`,
`Text`, `Examples`; each names its own partial in `report/web/blocks/`). `render` fills `report/web/report.html` with Jinja2 (autoescaped: model
text is shown as text) and writes one file: plots are PNGs inlined as data URIs, the search
and filter of the example table is a few lines of inline script, nothing is fetched, so the
file opens offline from disk. The plot helpers take plain numbers and return a `Figure`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypedDict

from jinja2 import Environment, FileSystemLoader, select_autoescape

from tunelab.core.plots import png_bytes, subplots

if TYPE_CHECKING:
    from matplotlib.figure import Figure as PlotFigure

WEB = Path(__file__).parent / "web"


@dataclass
class Text:
    template: ClassVar[str] = "text.html"
    text: str
    kind: str = "p"
    """p (a paragraph) or note (smaller, muted)."""


@dataclass
class Table:
    template: ClassVar[str] = "table.html"
    headers: list[str]
    rows: Sequence[Sequence[object]]
    """Cells, shown as text (`str`)."""
    caption: str = ""


@dataclass
class Figure:
    template: ClassVar[str] = "figure.html"
    data_uri: str
    alt: str
    caption: str = ""


class ExampleRow(TypedDict):
    """One item of the example table."""

    input: str
    reference: str
    outputs: dict[str, str]
    """system -> its output."""
    tags: list[str]
    key: str


@dataclass
class Examples:
    """The searchable example table: one row per item, each system's output side by side;
    `tags` (error categories, transition) feed the filter."""

    template: ClassVar[str] = "examples.html"
    systems: list[str]
    rows: list[ExampleRow]
    tags: list[str] = field(default_factory=list)


Block = Text | Table | Figure | Examples
"""What a section holds; each block names its own partial in `report/web/blocks/`."""


@dataclass
class Section:
    title: str
    blocks: Sequence[Block]
    anchor: str = ""


@dataclass
class Page:
    title: str
    subtitle: str
    sections: list[Section]

    def render(self, path: str | Path) -> Path:
        out = Path(path)
        env = Environment(loader=FileSystemLoader(str(WEB)),
                          autoescape=select_autoescape(["html"]))
        html = env.get_template("report.html").render(page=self,
                                                       style=(WEB / "report.css").read_text(),
                                                       script=(WEB / "report.js").read_text())
        partial = out.with_name(out.name + ".partial")
        partial.write_text(html, encoding="utf-8")
        partial.replace(out)
        return out


# ---- plots ----------------------------------------------------------------------------------

def figure(fig: PlotFigure, alt: str, caption: str = "") -> Figure:
    """A matplotlib figure as a block: a PNG data URI, so the page stays one file."""
    return Figure("data:image/png;base64," + base64.b64encode(png_bytes(fig)).decode(), alt,
                  caption)


def png_file(path: Path, alt: str, caption: str = "") -> Figure:
    return Figure("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode(), alt,
                  caption)


def curves(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], ylabel: str,
           title: str, log_y: bool = False) -> Figure:
    """Lines over optimizer steps: (label, steps, values) each."""
    fig, ax = subplots((5.0, 3.0))
    for label, steps, values in series:
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return figure(fig, title)


def bars_with_ci(labels: Sequence[str], values: Sequence[float],
                 cis: Sequence[tuple[float, float] | None], ylabel: str, title: str,
                 highlight: int | None = None, reference: float | None = None,
                 reference_label: str = "", caption: str = "") -> Figure:
    """One bar per label with its 95% CI as an error bar; an optional horizontal line."""
    fig, ax = subplots((max(4.2, 1.0 * len(labels) + 2), 3.2))
    low = [v - (c[0] if c else v) for v, c in zip(values, cis, strict=True)]
    high = [(c[1] if c else v) - v for v, c in zip(values, cis, strict=True)]
    colors = ["#2b8a3e" if i == highlight else "#7a8fa6" for i in range(len(labels))]
    ax.bar(range(len(labels)), values, yerr=[low, high], capsize=5, color=colors)
    for i, v in enumerate(values):
        ax.annotate(f"{v:.1f}", (i, v), textcoords="offset points", xytext=(8, 3), fontsize=8)
    if reference is not None:
        ax.axhline(reference, color="#c92a2a", linestyle="--", linewidth=1,
                   label=reference_label)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(range(len(labels)), labels, rotation=15 if len(labels) > 3 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return figure(fig, title, caption)


def grouped_bars(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                 ylabel: str, title: str,
                 errors: Sequence[Sequence[tuple[float, float]]] | None = None) -> Figure:
    """Bars per group, one colour per series (e.g. categories x two systems)."""
    fig, ax = subplots((max(5.0, 0.9 * len(groups) * len(series) + 2), 3.6))
    width = 0.8 / max(1, len(series))
    for j, (label, values) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        yerr = None
        if errors is not None:
            yerr = [[v - e[0] for v, e in zip(values, errors[j], strict=True)],
                    [e[1] - v for v, e in zip(values, errors[j], strict=True)]]
        ax.bar(xs, values, width, label=label, yerr=yerr, capsize=3 if yerr else 0)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 4 else 0,
                  fontsize=8, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return figure(fig, title)


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> Figure:
    """Rows: the reference label; columns: the predicted one (counts in the cells)."""
    fig, ax = subplots((0.9 * len(labels) + 2.0, 0.7 * len(labels) + 1.6))
    ax.imshow(matrix, cmap="Blues")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > top / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    ax.set_yticks(range(len(labels[:len(matrix)])), labels[:len(matrix)], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=10)
    return figure(fig, title)


def scatter(points: Sequence[tuple[str, float, float]], xlabel: str, ylabel: str, title: str,
            log_x: bool = False) -> Figure:
    """One labelled point per (label, x, y)."""
    fig, ax = subplots((4.2, 3.2))
    for label, x, y in points:
        ax.scatter([x], [y], s=30)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return figure(fig, title)
