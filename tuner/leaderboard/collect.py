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

A final run is identified by its content hash (``final_hash``) and seed: two runs with both
equal (a sweep started twice, a re-run that did not see the first copy) are one result and
count once, the first kept (``Records.duplicates`` says which were left out). A sweep that
did not finish (``Records.missing``: studies without their final runs, and why) still gets
a table, but it says so, and its tasks with missing rows mark no winner.
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
    #: Final runs left out as copies of a kept one (same final_hash and seed)
    duplicates: list[Duplicate] = field(default_factory=list)
    #: Studies of the sweep(s) without (all) their final runs: the sweep did not finish
    missing: list[Missing] = field(default_factory=list)


@dataclass(frozen=True)
class Duplicate:
    """A final run counted once: ``run_id`` repeats ``kept`` (same final_hash and seed)."""

    run_id: str
    kept: str
    task: str
    method: str
    seed: int


@dataclass(frozen=True)
class Missing:
    """A (task, row) the sweep planned or started that has not all its final runs."""

    task: str
    key: RowKey
    #: ``not started``, ``running``, ``interrupted``, ``lost``, ``failed``, ``tuned``
    state: str
    detail: str = ""

    def describe(self) -> str:
        """``synth/count × lora (tuned, no final run)``"""
        return f"{self.task} × {self.key[2]} ({self.detail or self.state})"


def final_identity(run: dict[str, Any]) -> tuple[str, str] | None:
    """What makes two final runs one result: (final_hash, seed); None without a hash
    (runs logged before the tag existed, or planted by hand, are never merged)."""
    tags = run["tags"]
    if not tags.get("final_hash"):
        return None
    return tags["final_hash"], str(tags.get("seed", ""))


def unique_finals(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Duplicate]]:
    """``runs`` less copies: per (final_hash, seed) the first run (oldest start) is kept;
    the kept runs stay in their given order."""
    kept: dict[tuple[str, str], str] = {}
    chosen: set[str] = set()
    duplicates: list[Duplicate] = []
    for run in sorted(runs, key=lambda r: (r.get("start_time") or 0, r["run_id"])):
        identity = final_identity(run)
        if identity is not None and identity in kept:
            tags = run["tags"]
            duplicates.append(
                Duplicate(run["run_id"], kept[identity], tags.get("task", ""),
                          tags.get("method", ""), int(tags.get("seed", 0)))
            )  # fmt: skip
            continue
        if identity is not None:
            kept[identity] = run["run_id"]
        chosen.add(run["run_id"])
    return [r for r in runs if r["run_id"] in chosen], duplicates


def final_runs(
    tracker: TrackingService, tmp: Path, runs: list[dict[str, Any]] | None = None
) -> Iterator[tuple[dict[str, Any], Any, Any]]:
    """Every finished final run of an experiment (copies left out: ``unique_finals``) with
    its test (logits, labels), downloaded into ``tmp``: what the leaderboard and the
    analyses read. ``runs``: these final runs of ``tracker`` instead of all of them."""
    if runs is None:
        runs, _ = unique_finals(tracker.find({"stage": "final"}))
    for run in runs:
        if run["tags"].get("replay"):  # a replayed final run has no predictions
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


def collect(
    trackers: list[TrackingService],
    planned: list[tuple[str, str]] | None = None,
    seeds: int | None = None,
) -> Records:
    """Read final runs, their predictions and tuning costs from one or more experiments.

    ``planned``: the sweep's (task, method) pairs, so studies that never started are
    listed as missing too (a rebuild from MLflow alone knows only the studies it logged);
    ``seeds``: final runs each should have (``final.seeds``; default: at least one)."""
    from tuner.leaderboard.unfinished import missing_studies  # (it reads this module's types)

    rows: list[dict[str, Any]] = []
    correct: dict[tuple[str, str, str, str], list[np.ndarray]] = {}
    tune_hours: dict[RowKey, float] = {}
    lost_hours: dict[RowKey, float] = {}
    found = [(t, run) for t in trackers for run in t.find({"stage": "final"})]
    kept, duplicates = unique_finals([run for _, run in found])
    kept_ids = {run["run_id"] for run in kept}
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            mine = [r for t, r in found if t is tracker and r["run_id"] in kept_ids]
            for run, logits, labels in final_runs(tracker, Path(tmp), mine):
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
    missing = missing_studies(trackers, rows, planned, seeds)
    return Records(pd.DataFrame(rows), correct, tune_hours, lost_hours, duplicates, missing)


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
    finished, and to ``lost`` when the study was killed or failed (work a crash threw away).
    A trial killed before it logged ``device_hours`` counts the epochs it ran."""
    from tuner.leaderboard.unfinished import spent_hours

    runs = tracker.find({"stage": "tune"}, status=None)
    studies = {r["run_id"]: r["status"] for r in runs if PARENT_RUN_TAG not in r["tags"]}
    for run in runs:
        parent = run["tags"].get(PARENT_RUN_TAG)
        if parent is None:
            continue
        key, hours = row_key(run["tags"]), spent_hours(tracker, run)
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
