"""Final runs → the leaderboard's numbers: per (task, method) means, ties, method means.

Numbers are test accuracies of the best *val* config per (task, method), retrained on
train800val200, mean ± std over seeds. Two means are reported and always labelled: *flat*
(over tasks) and *group* (mean of the per-group means, VTAB's Natural / Specialized /
Structured). Per task, bold = best and underline = tied with the best under a paired
bootstrap over test examples.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tuner.data.tasks import GROUPS, task_group, task_order
from tuner.leaderboard.collect import Records
from tuner.leaderboard.stats import bootstrap_ties, per_example_accuracy
from tuner.methods import list_methods


def summarise(records: Records, seed: int = 0) -> pd.DataFrame:
    """Per (task, method): mean/std test acc over seeds, params, group, best/tied flags."""
    frame = records.finals
    summary = (
        frame.groupby(["task", "method"], sort=False)
        .agg(
            test_acc=("test_acc", "mean"),
            test_acc_std=("test_acc", "std"),
            seeds=("seed", "count"),
            trainable_params=("trainable_params", "max"),
            trainable_params_without_head=("trainable_params_without_head", "max"),
            final_device_hours=("device_hours", "sum"),
            hp=("hp", "first"),
        )
        .reset_index()
    )
    summary["test_acc_std"] = summary["test_acc_std"].fillna(0.0)
    summary["group"] = [task_group(t) for t in summary["task"]]
    summary["best"], summary["tied"] = False, False
    for task, rows in summary.groupby("task"):
        accuracy = {m: per_example_accuracy(records.correct[(task, m)]) for m in rows["method"]}
        ties = bootstrap_ties(accuracy, seed=seed)
        for index, method in zip(rows.index, rows["method"], strict=True):
            summary.loc[index, "best"] = ties[method]["best"]
            summary.loc[index, "tied"] = ties[method]["tied"]
    return summary


def method_means(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method: flat mean over its tasks and mean of its VTAB group means (FGVC and user
    tasks count in the flat mean only)."""
    out = []
    for method, rows in summary.groupby("method", sort=False):
        out.append(
            {
                "method": method,
                "mean_flat": rows["test_acc"].mean(),
                "mean_group": rows[rows["group"].isin(GROUPS)]
                .groupby("group")["test_acc"]
                .mean()
                .mean(),
                "tasks": len(rows),
            }
        )
    return pd.DataFrame(out).set_index("method")


def ordered(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Registry order (stable across runs), not the order finals happened to finish in."""
    tasks = task_order(list(summary["task"]))
    methods = [m for m in list_methods() if m in set(summary["method"])]
    return tasks, methods


def wide_table(
    summary: pd.DataFrame, tune_hours: dict[str, float], lost_hours: dict[str, float] | None = None
) -> pd.DataFrame:
    """Methods × tasks cells as (text, sort value, style) with means, params and cost."""
    tasks, methods = ordered(summary)
    means = method_means(summary)
    table = []
    for method in methods:
        rows = summary[summary["method"] == method].set_index("task")
        row: dict[str, Any] = {"method": method}
        for task in tasks:
            if task not in rows.index:
                row[task] = ("–", -1, "")
                continue
            r = rows.loc[task]
            text = f"{100 * r['test_acc']:.1f}"
            if r["seeds"] > 1:
                text += f" ± {100 * r['test_acc_std']:.1f}"
            style = "best" if r["best"] else "tied" if r["tied"] else ""
            row[task] = (text, round(100 * r["test_acc"], 3), style)
        for key, label in (("mean_flat", "mean (flat)"), ("mean_group", "mean (group)")):
            value = 100 * means.loc[method, key]
            row[label] = (f"{value:.1f}", round(value, 3), "")
        params = rows["trainable_params_without_head"].max() / 1e6
        row["params M (excl. head)"] = (f"{params:.4f}", params, "")
        row["params M (total)"] = (
            f"{rows['trainable_params'].max() / 1e6:.4f}",
            rows["trainable_params"].max() / 1e6,
            "",
        )
        tune, final = tune_hours.get(method, 0.0), rows["final_device_hours"].sum()
        row["tune device-h"] = (f"{tune:.3f}", tune, "")
        if any((lost_hours or {}).values()):  # only sweeps a crash interrupted show it
            lost = (lost_hours or {}).get(method, 0.0)
            row["lost device-h"] = (f"{lost:.3f}", lost, "")
        row["final device-h"] = (f"{final:.3f}", final, "")
        table.append(row)
    return pd.DataFrame(table)


NOTE = (
    "Test accuracy (%) of the best validation config per (task, method), retrained on "
    "train800val200, mean ± std over seeds. mean (flat) = mean over tasks; mean (group) = "
    "mean of the Natural/Specialized/Structured group means. Bold = best on the task; "
    "underlined = tied with the best (paired bootstrap over test examples, 95%). "
    "Device-hours = trial wall time × devices per trial (GPUs, or CPU cores without GPUs); "
    "lost device-h (shown after a crash) = trials of studies that never finished."
)
