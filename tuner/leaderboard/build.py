"""The leaderboard's outputs: parquet, markdown, HTML and plots, and its MLflow run.

``build`` collects from any tracking server and writes every file; ``publish`` logs them as
a ``leaderboard`` run, so the MLflow UI holds the table beside the runs it came from.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tuner.leaderboard.collect import Records, collect
from tuner.leaderboard.render import heatmap_png, html_page, pareto_png, to_markdown
from tuner.leaderboard.summarise import NOTE, method_means, ordered, summarise, wide_table
from tuner.records import PARENT_RUN_TAG
from tuner.tracking.client import TrackingService


def write(records: Records, out_dir: Path, title: str) -> dict[str, Path]:
    """Parquet (per run and summary), markdown, HTML and PNG plots under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    tasks, methods = ordered(summary)
    summary = summary.sort_values(
        ["method", "task"],
        key=lambda col: col.map(
            {**{m: i for i, m in enumerate(methods)}, **{t: i for i, t in enumerate(tasks)}}
        ),
    ).reset_index(drop=True)
    wide = wide_table(summary, records.tune_hours, records.lost_hours)
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
    annotate_studies(tracker, pd.read_parquet(paths["summary"]))
    return run_id


def annotate_studies(tracker: TrackingService, summary: pd.DataFrame) -> int:
    """Give each study's parent run its final ``test/acc`` (mean and std over seeds).

    The runs table then compares studies on the same columns as the leaderboard (with their
    ``val/acc`` and ``best.*`` params), and the parallel-coordinates chart spans them.
    """
    rows = {(r.task, r.method): r for r in summary.itertuples()}
    done = 0
    for run in tracker.find({"stage": "tune"}):
        tags = run["tags"]
        row = rows.get((tags.get("task"), tags.get("method")))
        if PARENT_RUN_TAG in tags or row is None:
            continue
        key = f"study/{run['run_id']}"
        tracker.adopt(key, run["run_id"])
        metrics = {"test/acc": row.test_acc, "test/acc_std": row.test_acc_std}
        tracker.log_metrics(key, metrics, 0)
        done += 1
    return done


def build(
    tracking_uri: str, experiments: list[str], out_dir: Path, title: str
) -> tuple[dict[str, Path], TrackingService]:
    """Collect from ``experiments`` and write every output; returns paths and a tracker."""
    trackers = [TrackingService(tracking_uri, name, create=False) for name in experiments]
    records = collect(trackers)
    if records.finals.empty:
        raise ValueError(f"no finished final runs in experiment(s) {experiments} at {tracking_uri}")
    return write(records, out_dir, title), trackers[0]
