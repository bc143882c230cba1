"""The leaderboard's outputs: parquet, markdown, HTML and plots, and its MLflow run.

``build`` collects from any tracking server and writes every file; ``publish`` logs them as
a ``leaderboard`` run, so the MLflow UI holds the table beside the runs it came from.
``references`` (shipped names or JSON paths) put published numbers beside ours.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from tuner.leaderboard.collect import (
    ROW_COLUMNS,
    Records,
    Reference,
    collect,
    load_reference,
    row_key,
)
from tuner.leaderboard.notes import notes
from tuner.leaderboard.render import heatmap_png, html_page, pareto_png, to_markdown
from tuner.leaderboard.sections import Section, analysis_sections
from tuner.leaderboard.summarise import (
    compare,
    fold_free,
    method_means,
    ordered,
    summarise,
    wide_table,
)
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG


def write(
    records: Records,
    out_dir: Path,
    title: str,
    references: list[Reference] | None = None,
    sections: list[Section] | None = None,
) -> dict[str, Path]:
    """Parquet (per run and summary), markdown, HTML and PNG plots under ``out_dir``; with
    ``references``, also ``leaderboard_reference.parquet`` (ours, published, Δ per cell)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    tasks, rows = ordered(summary)
    summary = summary.sort_values(
        ["row", "task"],
        key=lambda col: col.map(
            {**{m: i for i, m in enumerate(rows)}, **{t: i for i, t in enumerate(tasks)}}
        ),
    ).reset_index(drop=True)
    comparisons = [compare(summary, ref) for ref in references or []]
    wide = wide_table(summary, records.tune_hours, records.lost_hours, comparisons)
    note = notes(summary, references, records)
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
    if references:
        paths["reference"] = out_dir / "leaderboard_reference.parquet"
        pd.concat(comparisons, ignore_index=True).to_parquet(paths["reference"], index=False)
    paths["markdown"].write_text(note + "\n\n" + to_markdown(wide))
    images = {
        "Test accuracy per method and task": paths["heatmap"],
        "Accuracy vs trainable parameters": paths["pareto"],
    }
    paths["html"].write_text(html_page(wide, title, images, note, sections))
    return paths


def publish(
    tracker: TrackingService,
    paths: dict[str, Path],
    sweep: str,
    extra: dict[str, float] | None = None,
) -> str:
    """A ``leaderboard`` run holding every output as an artifact and the means as metrics
    (plus ``extra`` metrics, e.g. the sweep's slot utilisation)."""
    key = f"leaderboard/{sweep}"
    run_id = tracker.start_run(key, "leaderboard", {"stage": "leaderboard", "sweep": sweep})
    if extra:
        tracker.log_metrics(key, extra, 0)
    for path in paths.values():
        tracker.log_artifact(key, path, "leaderboard")
    means = method_means(pd.read_parquet(paths["summary"]))
    for row in means.itertuples():
        prefix = row.row_key  # the method alone unless backbones or protocols differ
        tracker.log_metrics(
            key, {f"{prefix}/mean_flat": row.mean_flat, f"{prefix}/mean_group": row.mean_group}, 0
        )
    tracker.end_run(key)
    annotate_studies(tracker, pd.read_parquet(paths["summary"]))
    return run_id


def annotate_studies(tracker: TrackingService, summary: pd.DataFrame) -> int:
    """Give each study's parent run its final ``test/acc`` (mean and std over seeds).

    The runs table then compares studies on the same columns as the leaderboard (with their
    ``val/acc`` and ``best.*`` params), and the parallel-coordinates chart spans them.
    """
    rows = {(r.task, *(getattr(r, c) for c in ROW_COLUMNS)): r for r in summary.itertuples()}
    done = 0
    for run in tracker.find({"stage": "tune"}):
        tags = run["tags"]
        row = study_row(rows, tags)
        if PARENT_RUN_TAG in tags or row is None:
            continue
        key = f"study/{run['run_id']}"
        tracker.adopt(key, run["run_id"])
        metrics = {"test/acc": row.test_acc, "test/acc_std": row.test_acc_std}
        tracker.log_metrics(key, metrics, 0)
        done += 1
    return done


def study_row(rows: dict[tuple[str, ...], Any], tags: dict[str, str]) -> Any:
    """The summary row of a study's parent run: same task, backbone, protocol and method.

    A study logged before runs carried a ``protocol`` tag matches on the rest, when that
    leaves exactly one row (a resumed sweep can pair such a study with newer finals)."""
    if "task" not in tags or "method" not in tags:
        return None
    # a fold's study (T@n#k) belongs to its size's row (T@n), where folds are aggregated
    task, backbone = fold_free(tags["task"]), tags.get("backbone", "")
    method = row_key(tags)[2]  # with its variant, as the summary's rows are keyed
    if "protocol" in tags:
        return rows.get((task, backbone, tags["protocol"], method))
    found = [r for k, r in rows.items() if (k[0], k[1], k[3]) == (task, backbone, method)]
    return found[0] if len(found) == 1 else None


def build(
    tracking_uri: str,
    experiments: list[str],
    out_dir: Path,
    title: str,
    references: list[str] | None = None,
    planned: list[tuple[str, str]] | None = None,
    seeds: int | None = None,
) -> tuple[dict[str, Path], TrackingService]:
    """Collect from ``experiments`` and write every output; returns paths and a tracker.

    ``references``: shipped reference names (``petl_vision``) or JSON paths, loaded before
    anything is read from MLflow so a typo fails fast. ``planned`` (the sweep's (task,
    method) pairs) and ``seeds`` (``final.seeds``) let the table name what an unfinished
    sweep is missing beyond the studies MLflow knows (see ``collect``)."""
    loaded = [load_reference(r) for r in references or []]
    trackers = [TrackingService(tracking_uri, name, create=False) for name in experiments]
    records = collect(trackers, planned, seeds)
    if records.finals.empty:
        raise ValueError(f"no finished final runs in experiment(s) {experiments} at {tracking_uri}")
    with tempfile.TemporaryDirectory() as tmp:
        sections = analysis_sections(trackers, Path(tmp))
        return write(records, out_dir, title, loaded, sections), trackers[0]
