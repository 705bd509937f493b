"""matplotlib, set up once: figures drawn off-screen (the Agg backend), saved as PNG and closed.

matplotlib loads on the first plot, so a command that draws nothing never imports it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib loads on the first plot
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def subplots(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A new figure and its axes, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (laid out tight); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def save_png(fig: Figure, path: Path, dpi: int = 120) -> None:
    """The figure written to `path` as PNG; the figure is closed."""
    path.write_bytes(png_bytes(fig, dpi))
