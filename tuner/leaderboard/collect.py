"""MLflow records → the rows the leaderboard is built from (``collect``).

Built only from what MLflow holds (final runs, their test predictions, trial costs), so the
same code serves ``petl-sweep run`` and ``petl-sweep leaderboard --experiment ...`` on any
tracking server, across several sweeps. Numbers are test accuracies of the best *val*
config per (task, method), retrained on train800val200, mean ± std over seeds. Two means are
reported and always labelled: *flat* (over tasks) and *group* (mean of the per-group means,
VTAB's Natural / Specialized / Structured). Per task, bold = best and underline = tied with
the best under a paired bootstrap over test examples.

A leaderboard row is a ``RowKey`` (backbone, protocol, method), never a method alone: runs
merged from sweeps on two backbones or two protocols are different rows, not more seeds.
Published numbers (``load_reference``) are read from JSON beside this module or a path.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.tracking.artifacts import read_predictions
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

PREDICTIONS = "test_predictions.parquet"
#: What a leaderboard row is: (backbone, protocol, method); "" where a run lacks the tag.
ROW_COLUMNS = ["backbone", "protocol", "method"]
RowKey = tuple[str, str, str]
#: Shipped published results, ``<name>.json`` (``tools/extract_reference.py`` writes them).
REFERENCES = Path(__file__).parent / "references"
#: A shift set's accuracy as final runs log it: ``shift/<name>/acc``
SHIFT_METRIC = re.compile(r"shift/[^/]+/acc")


def row_key(tags: dict[str, str]) -> RowKey:
    """A run's row: its backbone and protocol tags (absent in runs logged before they
    existed, or planted by hand) and its method, with its ``variant`` (the study's fixed
    options, e.g. ``spt_lora (allocation=random)``) so an ablation gets its own row beside
    the method's instead of being averaged in as extra seeds."""
    method, variant = tags["method"], tags.get("variant", "")
    return (
        tags.get("backbone", ""),
        tags.get("protocol", ""),
        (f"{method} ({variant})" if variant else method),
    )


@dataclass
class Records:
    """Final runs (one row per seed) and the per-example correctness behind them."""

    finals: pd.DataFrame
    #: (task, backbone, protocol, method) → per-seed 0/1 correctness on the test set
    correct: dict[tuple[str, str, str, str], list[np.ndarray]] = field(default_factory=dict)
    tune_hours: dict[RowKey, float] = field(default_factory=dict)
    #: Device-hours of trials whose study never finished (a crash): spent, not useful
    lost_hours: dict[RowKey, float] = field(default_factory=dict)


def final_runs(tracker: TrackingService, tmp: Path) -> Iterator[tuple[dict[str, Any], Any, Any]]:
    """Every finished final run of an experiment with its test (logits, labels), downloaded
    into ``tmp``: what the leaderboard and the analyses read. A replayed final run (tag
    ``replay``) has no predictions: (None, None)."""
    for run in tracker.find({"stage": "final"}):
        if run["tags"].get("replay"):
            yield run, None, None
            continue
        try:
            path = tracker.download(run["run_id"], PREDICTIONS, tmp / run["run_id"])
        except Exception as err:  # MLflow raises several types for a missing artifact
            tags = run["tags"]
            raise LookupError(
                f"final run {run['run_id']} ({tags.get('task')}, {tags.get('method')}) has no "
                f"stored {PREDICTIONS}"
            ) from err
        yield run, *read_predictions(path)


def collect(trackers: list[TrackingService]) -> Records:
    """Read final runs, their predictions and tuning costs from one or more experiments."""
    rows: list[dict[str, Any]] = []
    correct: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    tune_hours: dict[RowKey, float] = {}
    lost_hours: dict[RowKey, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            for run, logits, labels in final_runs(tracker, Path(tmp)):
                tags, metrics = run["tags"], run["metrics"]
                task, key = tags["task"], row_key(tags)
                rows.append(
                    {
                        "task": task,
                        **dict(zip(ROW_COLUMNS, key, strict=True)),
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
                        **shift_metrics(metrics),
                    }
                )
                if logits is not None:  # a replayed run: no per-example test results
                    correct.setdefault((task, *key), []).append(
                        (logits.argmax(1) == labels).numpy().astype(np.float64)
                    )
            split_tuning_hours(tracker, tune_hours, lost_hours)
    rows_of = {tuple(r[c] for c in ROW_COLUMNS) for r in rows}
    for hours in (tune_hours, lost_hours):
        attribute_untagged(hours, rows_of)
    return Records(pd.DataFrame(rows), correct, tune_hours, lost_hours)


def shift_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A final run's shift-set accuracies (``shift/<name>/acc``), kept under their metric
    names: the leaderboard shows each as its own column (robustness beside test accuracy)."""
    return {k: v for k, v in metrics.items() if SHIFT_METRIC.fullmatch(k)}


def attribute_untagged(hours: dict[RowKey, float], rows: set[tuple[Any, ...]]) -> None:
    """Hours of trial runs logged without backbone/protocol tags (older sweeps, leftovers of
    a crash before the tags existed) go to their method's row when it has exactly one;
    otherwise they stay apart rather than be guessed onto one backbone."""
    for key in [k for k in hours if k[:2] == ("", "")]:
        matches = [r for r in rows if r[2] == key[2] and r[:2] != ("", "")]
        if len(matches) == 1:
            target = matches[0]
            hours[target] = hours.get(target, 0.0) + hours.pop(key)


def split_tuning_hours(
    tracker: TrackingService, useful: dict[RowKey, float], lost: dict[RowKey, float]
) -> None:
    """Add each trial's device-hours per row (``row_key``) to ``useful`` when its study
    finished, and to ``lost`` when the study was killed or failed (work a crash threw away)."""
    runs = tracker.find({"stage": "tune"}, status=None)
    studies = {r["run_id"]: r["status"] for r in runs if PARENT_RUN_TAG not in r["tags"]}
    for run in runs:
        parent = run["tags"].get(PARENT_RUN_TAG)
        if parent is None:
            continue
        key, hours = row_key(run["tags"]), run["metrics"].get("device_hours", 0.0)
        kept = studies.get(parent) == "FINISHED" and run["tags"].get("outcome") != "lost"
        bucket = useful if kept else lost
        bucket[key] = bucket.get(key, 0.0) + hours


@dataclass
class Reference:
    """Published test accuracies of one study on one backbone, as fractions like ours."""

    name: str
    backbone: str
    #: task id → method → test accuracy in [0, 1]
    accuracy: dict[str, dict[str, float]]
    #: where the numbers come from (repo, commit, path pattern): shown beside them
    source: dict[str, Any] = field(default_factory=dict)


def shipped_references() -> list[str]:
    """Names ``--reference`` accepts besides a path."""
    return sorted(p.stem for p in REFERENCES.glob("*.json"))


def load_reference(name_or_path: str) -> Reference:
    """A shipped reference by name (``petl_vision``) or any JSON file of the same shape.

    Accuracies are stored as published (``source.units``: ``percent`` or ``fraction``) so
    each can be checked against its source; they are returned as fractions."""
    path = REFERENCES / f"{name_or_path}.json"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"no reference {name_or_path!r}: not a file, nor one of {shipped_references()}"
        )
    try:
        document = json.loads(path.read_text())
        source = document.get("source", {})
        scale = 100.0 if source.get("units", "percent") == "percent" else 1.0
        return Reference(
            name=document.get("name", path.stem),
            backbone=document["backbone"],
            accuracy={
                task: {method: float(acc) / scale for method, acc in methods.items()}
                for task, methods in document["accuracy"].items()
            },
            source=source,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{path}: not a reference (needs backbone and accuracy: task -> method -> "
            f"number): {err!r}"
        ) from None
