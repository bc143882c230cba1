"""Final results → the leaderboard: methods × tasks test accuracy, means, parameters.

Input rows come from the final stage (best val config per study, retrained on
train800val200, evaluated once on test). Two means are reported and always labelled:
*flat* (over tasks) and *group* (mean of the per-group means, VTAB's Natural /
Specialized / Structured). Output: a long-format parquet table and a wide markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tuner.data.tasks import get_task, list_tasks
from tuner.methods import list_methods


def results_frame(finals: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per final run (task, method, seed)."""
    rows = [
        {
            "task": r["spec"]["task"],
            "method": r["spec"]["method"],
            "seed": r["spec"]["seed"],
            "test_acc": float(r["test/acc"]),
            "trainable_params": int(r["trainable_params"]),
            "trainable_params_without_head": int(r["trainable_params_without_head"]),
            "hp": ",".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(r["spec"]["hp"].items())
            ),
        }
        for r in finals
    ]
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test accuracy over seeds per (task, method), with the task group."""
    grouped = (
        frame.groupby(["task", "method"], sort=False)
        .agg(
            test_acc=("test_acc", "mean"),
            test_acc_std=("test_acc", "std"),
            seeds=("seed", "count"),
            trainable_params=("trainable_params", "mean"),
            trainable_params_without_head=("trainable_params_without_head", "mean"),
            hp=("hp", "first"),
        )
        .reset_index()
    )
    grouped["test_acc_std"] = grouped["test_acc_std"].fillna(0.0)
    grouped["group"] = [get_task(t).group for t in grouped["task"]]
    return grouped


def flat_and_group_means(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method: flat mean over tasks, and mean of group means."""
    out = []
    for method, rows in summary.groupby("method", sort=False):
        group_means = rows.groupby("group")["test_acc"].mean()
        out.append(
            {
                "method": method,
                "mean_flat": rows["test_acc"].mean(),
                "mean_group": group_means.mean(),
                "tasks": len(rows),
            }
        )
    return pd.DataFrame(out)


def wide_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Methods × tasks (test acc %, mean ± std), then flat/group means and parameters."""
    # Registry order, not the order finals happened to finish in: stable across runs.
    present_tasks, present_methods = set(summary["task"]), set(summary["method"])
    tasks = [t for t in list_tasks() if t in present_tasks]
    methods = [m for m in list_methods() if m in present_methods]
    means = flat_and_group_means(summary).set_index("method")
    table = []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        for task in tasks:
            hit = summary[(summary["task"] == task) & (summary["method"] == method)]
            if hit.empty:
                row[task] = "–"
                continue
            acc, std = 100 * hit["test_acc"].iloc[0], 100 * hit["test_acc_std"].iloc[0]
            row[task] = f"{acc:.1f}" + (f" ± {std:.1f}" if hit["seeds"].iloc[0] > 1 else "")
        row["mean (flat)"] = f"{100 * means.loc[method, 'mean_flat']:.1f}"
        row["mean (group)"] = f"{100 * means.loc[method, 'mean_group']:.1f}"
        rows = summary[summary["method"] == method]
        row["params (M, excl. head)"] = f"{rows['trainable_params_without_head'].max() / 1e6:.4f}"
        row["params (M, total)"] = f"{rows['trainable_params'].max() / 1e6:.4f}"
        table.append(row)
    return pd.DataFrame(table)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def write_leaderboard(finals: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.parquet`` (long, per seed), ``summary.parquet`` and ``.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = results_frame(finals)
    summary = summarise(frame)
    wide = wide_table(summary)
    paths = {
        "runs": out_dir / "leaderboard_runs.parquet",
        "summary": out_dir / "leaderboard.parquet",
        "markdown": out_dir / "leaderboard.md",
    }
    frame.to_parquet(paths["runs"], index=False)
    summary.to_parquet(paths["summary"], index=False)
    note = (
        "Test accuracy (%) of the best val config per (task, method), retrained on "
        "train800val200; *flat* = mean over tasks, *group* = mean of group means.\n\n"
    )
    paths["markdown"].write_text(note + to_markdown(wide))
    return paths
