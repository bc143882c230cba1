"""``analyze agreement``: do tuned methods that tie in accuracy make the same mistakes?

Study 000 finds they do not, which is why ensembles of them gain. For every task and every
pair of methods (same backbone and protocol), over seed-matched final runs:

* ``agreement``: share of test examples where both predict the same class;
* ``both_wrong`` / ``only_one_wrong``: shares of examples that both, or exactly one, get wrong;
* ``error_overlap``: both wrong / at least one wrong (1 = the same mistakes);
* ``confident_agreement``: agreement on the examples both models are confident about, each
  by its own top quarter of softmax confidence (``confident_n`` of them).

Runs are paired by seed order (the k-th seed of one method with the k-th of the other);
figures are seed means. Output: one row per (task, pair) and a methods × methods heatmap of
agreement per task plus the mean over tasks.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tuner import methods
from tuner.analysis.figures import save_figure
from tuner.analysis.predictions import Predictions, final_predictions
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.tracking.client import TrackingService

REGISTRY = methods.list_methods()
#: Each model's confidence quantile above which its prediction counts as confident.
CONFIDENT_QUANTILE = 0.75


def pair_figures(a: Predictions, b: Predictions) -> dict[str, float]:
    """The agreement figures of two runs' predictions on the same test set."""
    if len(a.label) != len(b.label) or not np.array_equal(a.label, b.label):
        raise AnalysisError(f"{a.task}: {a.method} and {b.method} were tested on different sets")
    wrong_a, wrong_b = ~a.correct, ~b.correct
    either = (wrong_a | wrong_b).sum()
    confident = (a.confidence >= np.quantile(a.confidence, CONFIDENT_QUANTILE)) & (
        b.confidence >= np.quantile(b.confidence, CONFIDENT_QUANTILE)
    )
    same = a.pred == b.pred
    return {
        "agreement": float(same.mean()),
        "both_wrong": float((wrong_a & wrong_b).mean()),
        "only_one_wrong": float((wrong_a ^ wrong_b).mean()),
        "error_overlap": float((wrong_a & wrong_b).sum() / either) if either else float("nan"),
        "confident_n": float(confident.sum()),
        "confident_agreement": float(same[confident].mean()) if confident.any() else float("nan"),
    }


def agreement_table(runs: list[Predictions]) -> pd.DataFrame:
    """One row per (task, backbone, protocol, method pair): seed-mean figures."""
    groups: dict[tuple[str, str, str], dict[str, list[Predictions]]] = defaultdict(dict)
    for run in runs:
        groups[(run.task, run.backbone, run.protocol)].setdefault(run.method, []).append(run)
    rows = []
    for (task, backbone, protocol), by_method in groups.items():
        for method_runs in by_method.values():
            method_runs.sort(key=lambda r: r.seed)
        # registry order, so a pair reads the same way on every task
        ordered = sorted(by_method, key=lambda m: (REGISTRY.index(m) if m in REGISTRY else 99, m))
        for ma, mb in itertools.combinations(ordered, 2):
            pairs = list(zip(by_method[ma], by_method[mb], strict=False))
            figures = pd.DataFrame([pair_figures(a, b) for a, b in pairs]).mean()
            rows.append(
                {
                    "task": task,
                    "backbone": backbone,
                    "protocol": protocol,
                    "method_a": ma,
                    "method_b": mb,
                    "seeds": len(pairs),
                    **figures.to_dict(),
                }
            )
    if not rows:
        raise AnalysisError("no task has final runs of two methods to compare")
    return pd.DataFrame(rows)


def heatmaps(table: pd.DataFrame, path: Path) -> Path:
    """Agreement as methods × methods heatmaps: one per task, then the mean over tasks."""
    methods = list(dict.fromkeys([*table["method_a"], *table["method_b"]]))
    tasks = list(dict.fromkeys(table["task"]))
    panels = [(t, table[table["task"] == t]) for t in tasks] + [("mean over tasks", table)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.4), squeeze=False)
    for ax, (title, part) in zip(axes[0], panels, strict=True):
        grid = np.eye(len(methods))
        for (ma, mb), value in part.groupby(["method_a", "method_b"])["agreement"].mean().items():
            i, j = methods.index(ma), methods.index(mb)
            grid[i, j] = grid[j, i] = value
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(methods)), methods, fontsize=7)
        ax.set_title(title, fontsize=8)
        for i, j in itertools.product(range(len(methods)), repeat=2):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    return save_figure(
        fig,
        path,
        "prediction agreement between methods (test set, seed-matched)",
        fontsize=9,
        dpi=120,
    )


@analysis("agreement")
def agreement(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Pairwise agreement per task; the summary is the mean over tasks per pair."""
    table = agreement_table(final_predictions(trackers))
    numeric = table.select_dtypes("number").columns.drop("seeds", errors="ignore")
    summary = table.groupby(["method_a", "method_b"])[list(numeric)].mean().reset_index()
    return Output(
        table,
        [heatmaps(table, out / "agreement.png")],
        summary,
        f"Prediction agreement: mean over {table['task'].nunique()} task(s)",
    )
