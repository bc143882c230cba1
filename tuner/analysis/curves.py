"""``analyze curves``: per-epoch train and val loss/accuracy of the chosen configurations.

Study 001 reads overfitting from loss curves: full fine-tuning's val loss turns up on small
tasks while prompt tuning's keeps falling. For every study (task × method) this draws the
history of the trial the study chose (the study run's ``best_trial`` tag names a child
trial run, tag ``trial_id``) and the training history of its final runs, which fit
train+val and so have no val curve. Test metrics are never read per epoch; only the
``CURVES`` metrics are asked for. One PNG per task; the table is long (one row per
run × metric × epoch) and the summary reads the chosen trial's val loss: the epoch of its
minimum and how far it rose after it (``val_loss_rise`` > 0: overfitting), and the last
epoch's train − val accuracy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tuner.analysis.figures import save_figure
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.data.tasks import task_order
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

#: The per-epoch metrics drawn; nothing else (never ``test/*``) is read per epoch.
CURVES = ("train/loss", "train/acc", "val/loss", "val/acc")


def chosen_trials(tracker: TrackingService) -> list[dict[str, Any]]:
    """Each study's chosen trial run (newest study per task × backbone × method), with the
    study's tags added as ``study_tags``."""
    parents = [
        r
        for r in tracker.find({"stage": "tune"})
        if PARENT_RUN_TAG not in r["tags"] and r["tags"].get("best_trial", "none") != "none"
    ]
    parents.sort(key=lambda r: r["start_time"] or 0, reverse=True)
    seen: set[tuple[str, str, str]] = set()
    out = []
    for parent in parents:
        tags = parent["tags"]
        key = (tags.get("task", ""), tags.get("backbone", ""), tags.get("method", ""))
        if key in seen:
            continue
        seen.add(key)
        found = tracker.find(
            {PARENT_RUN_TAG: parent["run_id"], "trial_id": tags["best_trial"]}, status=None
        )
        if not found:
            raise AnalysisError(
                f"study {tags.get('study', parent['run_id'])}: its best trial "
                f"{tags['best_trial']} has no trial run"
            )
        out.append({**found[0], "study_tags": tags})
    return out


def history_rows(
    tracker: TrackingService, run: dict[str, Any], tags: dict[str, str], source: str
) -> list[dict[str, Any]]:
    """One row per (metric, epoch) of ``CURVES`` for one run."""
    base = {
        "task": tags.get("task", ""),
        "backbone": tags.get("backbone", ""),
        "method": tags.get("method", ""),
        "source": source,
        "run_id": run["run_id"],
    }
    return [
        {**base, "metric": name, "epoch": step, "value": value}
        for name in CURVES
        if name in run["metrics"]
        for step, value in tracker.metric_history(run["run_id"], name)
    ]


def curve_table(trackers: list[TrackingService]) -> pd.DataFrame:
    """The histories of every chosen trial and every final run of the experiments."""
    rows: list[dict[str, Any]] = []
    for tracker in trackers:
        for trial in chosen_trials(tracker):
            source = f"trial {trial['tags'].get('trial_id', '')}"
            rows += history_rows(tracker, trial, trial["study_tags"], source)
        for final in tracker.find({"stage": "final"}):
            source = f"final seed {final['tags'].get('seed', '')}"
            rows += history_rows(tracker, final, final["tags"], source)
    if not rows:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no chosen trials or final runs with epoch metrics in {names}")
    table = pd.DataFrame(rows)
    table["stage"] = np.where(table["source"].str.startswith("trial"), "trial", "final")
    return table.sort_values(["task", "method", "source", "metric", "epoch"], ignore_index=True)


def _last(series: dict[str, pd.Series], metric: str) -> float:
    return float(series[metric].iloc[-1]) if metric in series else float("nan")


def overfitting_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per chosen trial: epochs, val-loss minimum epoch, its rise after, train − val acc."""
    rows = []
    trials = table[table["stage"] == "trial"]
    for (task, backbone, method), part in trials.groupby(["task", "backbone", "method"]):
        series = {m: g.set_index("epoch")["value"] for m, g in part.groupby("metric")}
        val_loss = series.get("val/loss", pd.Series(dtype=float)).dropna()
        rows.append(
            {
                "task": task,
                "backbone": backbone,
                "method": method,
                "epochs": int(part["epoch"].max()),
                "min_val_loss_epoch": int(val_loss.idxmin()) if len(val_loss) else -1,
                "val_loss_rise": float(val_loss.iloc[-1] - val_loss.min())
                if len(val_loss)
                else float("nan"),
                "last_train_minus_val_acc": _last(series, "train/acc") - _last(series, "val/acc"),
            }
        )
    return pd.DataFrame(rows)


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@#-]+", "_", task)


def task_plot(part: pd.DataFrame, task: str, path: Path) -> Path:
    """Loss and accuracy per epoch: chosen trial train (dashed) and val (solid), final
    runs' train (dotted), one colour per method."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    colours = dict(zip(dict.fromkeys(part["method"]), plt.cm.tab10.colors, strict=False))
    styles = {("trial", "train"): "--", ("trial", "val"): "-", ("final", "train"): ":"}
    for (method, source, metric), g in part.groupby(["method", "source", "metric"], sort=False):
        split, what = metric.split("/")
        stage = "trial" if source.startswith("trial") else "final"
        ax = axes[0 if what == "loss" else 1]
        ax.plot(g["epoch"], g["value"], styles.get((stage, split), "-."), marker=".",
                color=colours[method], label=f"{method} {split} ({source})")  # fmt: skip
    for ax, what in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, loc="lower right")
    return save_figure(
        fig,
        path,
        f"{task}: chosen trials (train --, val —) and final runs (train ··)",
        fontsize=9,
        dpi=110,
    )


@analysis("curves")
def curves(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Per-epoch curves of the chosen trial and final runs of every study, per task."""
    table = curve_table(trackers)
    tasks = task_order(list(dict.fromkeys(table["task"])))
    plots = [task_plot(table[table["task"] == t], t, out / f"curves-{_slug(t)}.png") for t in tasks]
    summary = overfitting_summary(table)
    if summary["backbone"].nunique() == 1:  # the console table has no room for it
        summary = summary.drop(columns="backbone")
    return Output(
        table,
        plots,
        summary,
        f"Training curves of the chosen trials and final runs ({len(tasks)} task(s))",
    )
