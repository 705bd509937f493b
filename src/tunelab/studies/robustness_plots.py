"""The robustness study's plots: each perturbation's change with its CI, and the severity
sweep (robustness.png, severity.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tunelab.core.plots import save_png, subplots

if TYPE_CHECKING:  # matplotlib loads on the first plot
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as PlotFigure


def variant_label(perturbation: str, severity: float | None) -> str:
    """typo@0.1, or the perturbation's name alone when severity does not matter."""
    return perturbation if severity is None else f"{perturbation}@{severity:g}"


class PlottedRow(Protocol):
    system: str
    perturbation: str
    severity: float | None
    clean: float
    perturbed: float
    delta: float
    ci: tuple[float, float]


class PlottedWorst(Protocol):
    system: str
    severity: float | None
    worst: float


class RobustnessReport(Protocol):
    """What the plots read of a robustness report (studies/robustness.py)."""

    task: str
    n: int
    key: str
    systems: list[str]

    @property
    def rows(self) -> Sequence[PlottedRow]: ...

    @property
    def worst(self) -> Sequence[PlottedWorst]: ...


def plot_robustness(report: RobustnessReport, path: Path) -> None:
    """Per perturbation, each system's change from its clean score with the paired 95% CI
    (horizontal bars, so dozens of perturbations stay readable)."""
    labels = list(dict.fromkeys(variant_label(r.perturbation, r.severity) for r in report.rows))
    height = 0.8 / len(report.systems)
    fig, ax = subplots((7.5, 1.2 + 0.28 * len(labels) * len(report.systems) ** 0.5))
    for i, system in enumerate(report.systems):
        rows = [r for r in report.rows if r.system == system]
        deltas = np.array([r.delta for r in rows])
        errors = np.array([[r.delta - r.ci[0] for r in rows], [r.ci[1] - r.delta for r in rows]])
        positions = np.arange(len(labels)) + (i - (len(report.systems) - 1) / 2) * height
        ax.barh(positions, deltas, height, xerr=errors, capsize=2,
                label=f"{system} (clean {rows[0].clean:.1f})", error_kw={"linewidth": 0.8})
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"change in {report.key} from the clean items (95% CI)")
    save_plot(fig, ax, f"{report.task}: perturbed vs clean (n={report.n})", path)


def save_plot(fig: PlotFigure, ax: Axes, title: str, path: Path, legend: int = 8) -> None:
    """Title, legend, lay out, write (PNG, 120 dpi) and close a figure."""
    ax.set_title(title)
    ax.legend(fontsize=legend)
    save_png(fig, path)


def plot_severity(report: RobustnessReport, path: Path) -> None:
    """Score vs severity per system (mean over graded perturbations) and the worst case."""
    fig, ax = subplots((6, 4))
    for system in report.systems:
        rows = [(r.severity, r) for r in report.rows
                if r.system == system and r.severity is not None]
        levels = sorted({s for s, _ in rows})
        means = [float(np.mean([r.perturbed for s, r in rows if s == level])) for level in levels]
        clean = rows[0][1].clean
        line = ax.plot([0.0, *levels], [clean, *means], marker="o", label=f"{system}: mean")[0]
        worst = [(w.severity, w.worst) for w in report.worst
                 if w.system == system and w.severity is not None]
        ax.plot([0.0, *[s for s, _ in worst]], [clean, *[v for _, v in worst]],
                linestyle="--", marker="x", color=line.get_color(), label=f"{system}: worst case")
    ax.set_xlabel("severity (share of words / characters perturbed)")
    ax.set_ylabel(report.key)
    save_plot(fig, ax, f"{report.task}: severity sweep (n={report.n})", path, 7)
