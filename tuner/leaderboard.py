"""MLflow records → the leaderboard people cite.

Built only from what MLflow holds (final runs, their test predictions, trial costs), so the
same code serves ``petl-sweep run`` and ``petl-sweep leaderboard --experiment ...`` on any
tracking server, across several sweeps. Numbers are test accuracies of the best *val*
config per (task, method), retrained on train800val200, mean ± std over seeds. Two means are
reported and always labelled: *flat* (over tasks) and *group* (mean of the per-group means,
VTAB's Natural / Specialized / Structured). Per task, bold = best and underline = tied with
the best under a paired bootstrap over test examples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.artifacts import read_predictions
from tuner.data.tasks import GROUPS, task_group, task_order
from tuner.methods import list_methods
from tuner.report import heatmap_png, html_page, pareto_png
from tuner.stats import bootstrap_ties, per_example_accuracy
from tuner.tracking import TrackingService

PREDICTIONS = "test_predictions.parquet"


@dataclass
class Records:
    """Final runs (one row per seed) and the per-example correctness behind them."""

    finals: pd.DataFrame
    correct: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    tune_hours: dict[str, float] = field(default_factory=dict)


def collect(trackers: list[TrackingService]) -> Records:
    """Read final runs, their predictions and tuning costs from one or more experiments."""
    rows: list[dict[str, Any]] = []
    correct: dict[tuple[str, str], list[np.ndarray]] = {}
    tune_hours: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            for run in tracker.find({"stage": "final"}):
                tags, metrics = run["tags"], run["metrics"]
                task, method = tags["task"], tags["method"]
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        "seed": int(tags.get("seed", 0)),
                        "test_acc": metrics["test/acc"],
                        "trainable_params": int(metrics.get("trainable_params", 0)),
                        "trainable_params_without_head": int(
                            metrics.get("trainable_params_without_head", 0)
                        ),
                        "device_hours": metrics.get("device_hours", 0.0),
                        "experiment": tracker.experiment_id,
                        "run_id": run["run_id"],
                        "hp": ",".join(
                            f"{k}={v}"
                            for k, v in sorted(run["params"].items())
                            if k not in ("seed", "epochs", "batch_size")
                        ),
                    }
                )
                path = tracker.download(run["run_id"], PREDICTIONS, Path(tmp) / run["run_id"])
                logits, labels = read_predictions(path)
                correct.setdefault((task, method), []).append(
                    (logits.argmax(1) == labels).numpy().astype(np.float64)
                )
            for run in tracker.find({"stage": "tune"}):
                if "mlflow.parentRunId" in run["tags"]:
                    method = run["tags"]["method"]
                    tune_hours[method] = tune_hours.get(method, 0.0) + run["metrics"].get(
                        "device_hours", 0.0
                    )
    return Records(pd.DataFrame(rows), correct, tune_hours)


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


def _ordered(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Registry order (stable across runs), not the order finals happened to finish in."""
    tasks = task_order(list(summary["task"]))
    methods = [m for m in list_methods() if m in set(summary["method"])]
    return tasks, methods


def wide_table(summary: pd.DataFrame, tune_hours: dict[str, float]) -> pd.DataFrame:
    """Methods × tasks cells as (text, sort value, style) with means, params and cost."""
    tasks, methods = _ordered(summary)
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
        row["final device-h"] = (f"{final:.3f}", final, "")
        table.append(row)
    return pd.DataFrame(table)


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown: **best**, <u>tied with best</u> (no tabulate dependency)."""

    def cell(value: Any) -> str:
        text, _, style = value if isinstance(value, tuple) else (value, value, "")
        return (
            f"**{text}**" if style == "best" else f"<u>{text}</u>" if style == "tied" else str(text)
        )

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


NOTE = (
    "Test accuracy (%) of the best validation config per (task, method), retrained on "
    "train800val200, mean ± std over seeds. mean (flat) = mean over tasks; mean (group) = "
    "mean of the Natural/Specialized/Structured group means. Bold = best on the task; "
    "underlined = tied with the best (paired bootstrap over test examples, 95%). "
    "Device-hours = trial wall time × devices per trial (GPUs, or CPU cores without GPUs)."
)


def write(records: Records, out_dir: Path, title: str) -> dict[str, Path]:
    """Parquet (per run and summary), markdown, HTML and PNG plots under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    tasks, methods = _ordered(summary)
    summary = summary.sort_values(
        ["method", "task"],
        key=lambda col: col.map(
            {**{m: i for i, m in enumerate(methods)}, **{t: i for i, t in enumerate(tasks)}}
        ),
    ).reset_index(drop=True)
    wide = wide_table(summary, records.tune_hours)
    paths = {
        "runs": out_dir / "leaderboard_runs.parquet",
        "summary": out_dir / "leaderboard.parquet",
        "markdown": out_dir / "leaderboard.md",
        "heatmap": heatmap_png(summary, out_dir / "heatmap.png"),
        "pareto": pareto_png(summary, out_dir / "pareto.png"),
        "html": out_dir / "leaderboard.html",
    }
    records.finals.to_parquet(paths["runs"], index=False)
    summary.to_parquet(paths["summary"], index=False)
    paths["markdown"].write_text(NOTE + "\n\n" + to_markdown(wide))
    images = {
        "Test accuracy per method and task": paths["heatmap"],
        "Accuracy vs trainable parameters": paths["pareto"],
    }
    paths["html"].write_text(html_page(wide, title, images, NOTE))
    return paths


def publish(tracker: TrackingService, paths: dict[str, Path], sweep: str) -> str:
    """A ``leaderboard`` run holding every output as an artifact and the means as metrics."""
    key = f"leaderboard/{sweep}"
    run_id = tracker.start_run(key, "leaderboard", {"stage": "leaderboard", "sweep": sweep})
    for path in paths.values():
        tracker.log_artifact(key, path, "leaderboard")
    means = method_means(pd.read_parquet(paths["summary"]))
    for method, row in means.iterrows():
        tracker.log_metrics(
            key,
            {f"{method}/mean_flat": row["mean_flat"], f"{method}/mean_group": row["mean_group"]},
            0,
        )
    tracker.end_run(key)
    return run_id


def build(
    tracking_uri: str, experiments: list[str], out_dir: Path, title: str
) -> tuple[dict[str, Path], TrackingService]:
    """Collect from ``experiments`` and write every output; returns paths and a tracker."""
    trackers = [TrackingService(tracking_uri, name, create=False) for name in experiments]
    records = collect(trackers)
    if records.finals.empty:
        raise ValueError(f"no finished final runs in experiment(s) {experiments} at {tracking_uri}")
    return write(records, out_dir, title), trackers[0]
