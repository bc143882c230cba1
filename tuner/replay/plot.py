"""The regret figure: each strategy's normalised regret against configurations tried.

Per study, regret is (best − incumbent) / (best − worst) of the grid's final val accuracies
(0: the grid's best found); each line is the mean over studies, averaged over seeds, with the
seeds' 95 % bootstrap band. This is how Quick-Tune (Arango et al., ICLR 2024) and Syne Tune
report anytime performance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuner.analysis.figures import save_figure
from tuner.replay.runner import Comparison
from tuner.replay.summary import regret_curves


def regret_figure(comparison: Comparison, path: Path, horizon: int | None = None) -> Path:
    """Write the PNG; ``horizon``: configurations on the x axis (default: the comparison's,
    up to which every run's incumbent is exact)."""
    import matplotlib.pyplot as plt

    table = comparison.table
    horizon = horizon or comparison.horizon
    x = np.arange(1, horizon + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rng = np.random.default_rng(0)
    for strategy in comparison.strategies:
        curves = regret_curves(comparison, strategy.name, horizon)
        mean = curves.mean(axis=0)
        draws = curves[rng.integers(len(curves), size=(500, len(curves)))].mean(axis=1)
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
        (line,) = ax.plot(x, mean, label=strategy.name, lw=1.4)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("configurations tried per study")
    ax.set_ylabel("normalised regret (best − incumbent) / (best − worst)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = (
        f"{Path(table.source).stem}: {len(comparison.studies)} studies, "
        f"{len(comparison.seeds)} seeds, mean ± 95 %"
    )
    return save_figure(fig, path, title)
