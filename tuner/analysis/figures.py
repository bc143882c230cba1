"""The one way an analysis finishes a matplotlib figure: title, layout, PNG, closed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def save_figure(
    fig: plt.Figure, path: Path, title: str | None = None, fontsize: int = 9, dpi: int = 120
) -> Path:
    """Title ``fig``, lay it out, write it to ``path`` and close it (figures left open
    pile up in a long analysis); returns ``path``."""
    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)
