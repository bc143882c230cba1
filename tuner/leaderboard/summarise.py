"""Final runs → the leaderboard's numbers: per (task, row) means, ties, row means.

A row is (backbone, protocol, method): runs of two backbones or two protocols are never
averaged as if they were seeds. With one backbone and protocol a row is labelled by its
method alone (the table of a single sweep); otherwise ``method @ backbone``, plus the
protocol hash when two protocols share a backbone.

Numbers are test accuracies of the best *val* config per (task, row), retrained on
train800val200, mean ± std over seeds. Two means are reported and always labelled: *flat*
(over tasks) and *group* (mean of the per-group means, VTAB's Natural / Specialized /
Structured). Per task, bold = best and underline = tied with the best under a paired
bootstrap over test examples, among rows of the same backbone and protocol.

Published numbers (a ``Reference``) sit under the row they match, with a Δ row (ours −
published), only where task, method and backbone all match.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from tuner.backbones import resolve_backbone
from tuner.data.subsets import parse_task
from tuner.data.tasks import GROUPS, task_group, task_order
from tuner.leaderboard.collect import ROW_COLUMNS, SHIFT_METRIC, Records, Reference, RowKey
from tuner.leaderboard.stats import bootstrap_ties, per_example_accuracy
from tuner.methods import list_methods

#: A cell of the wide table: (text, sort value, style)
Cell = tuple[str, float, str]
MISSING: Cell = ("–", -1, "")


def fold_free(task_id: str) -> str:
    """``T@n`` of ``T@n#k`` (folds of one size are one leaderboard column); other ids as is."""
    ref = parse_task(task_id)
    if ref.subset is None or "#" not in ref.suffix:
        return task_id
    return task_id[: task_id.rindex("#")]


def shift_columns(frame: pd.DataFrame) -> list[str]:
    """The ``shift/<name>/acc`` columns of final runs (sorted: a stable column order)."""
    return sorted(c for c in frame.columns if SHIFT_METRIC.fullmatch(str(c)))


def _fold_means(frame: pd.DataFrame, accuracies: list[str]) -> pd.DataFrame:
    """Per (task, row, fold): accuracies' mean and std over seeds, costs and the config."""
    aggs: dict[str, tuple[str, Any]] = {}
    for column in accuracies:
        aggs[column] = (column, "mean")
        aggs[f"{column}_std"] = (column, "std")
    return (
        frame.groupby(["task", *ROW_COLUMNS, "fold_task"], sort=False, dropna=False)
        .agg(
            **aggs,
            seeds=("seed", "count"),
            trainable_params=("trainable_params", "max"),
            trainable_params_without_head=("trainable_params_without_head", "max"),
            final_device_hours=("device_hours", "sum"),
            hp=("hp", "first"),
        )
        .reset_index()
    )


def aggregate_folds(finals: pd.DataFrame) -> pd.DataFrame:
    """Per (task, row): mean ± std of test (and shift) accuracy, ``T@n#k`` folds merged.

    Seeds are averaged within a fold first; a task with several folds then reports the
    mean and the std *across fold means* (what another draw of n images changes), one
    fold the std over its seeds as before. ``seeds`` counts every run, ``folds`` the folds;
    ``hp`` lists each fold's config when they differ."""
    frame = finals.assign(fold_task=finals["task"], task=finals["task"].map(fold_free))
    accuracies = ["test_acc", *shift_columns(frame)]
    per_fold = _fold_means(frame, accuracies)
    aggs: dict[str, tuple[str, Any]] = {}
    for column in accuracies:
        aggs[column] = (column, "mean")
        aggs[f"{column}_fold_std"] = (column, "std")
        aggs[f"{column}_seed_std"] = (f"{column}_std", "first")
    summary = (
        per_fold.groupby(["task", *ROW_COLUMNS], sort=False, dropna=False)
        .agg(
            **aggs,
            seeds=("seeds", "sum"),
            folds=("fold_task", "nunique"),
            trainable_params=("trainable_params", "max"),
            trainable_params_without_head=("trainable_params_without_head", "max"),
            final_device_hours=("final_device_hours", "sum"),
            hp=("hp", lambda hp: " | ".join(dict.fromkeys(hp))),
        )
        .reset_index()
    )
    for column in accuracies:
        fold_std = summary.pop(f"{column}_fold_std")
        seed_std = summary.pop(f"{column}_seed_std")
        std = fold_std.where(summary["folds"] > 1, seed_std).fillna(0.0)
        summary.insert(summary.columns.get_loc(column) + 1, f"{column}_std", std)
    return summary


def summarise(records: Records, seed: int = 0) -> pd.DataFrame:
    """Per (task, row): mean/std test acc (``aggregate_folds``), shift-set accuracies,
    params, group, best/tied flags."""
    summary = aggregate_folds(records.finals)
    summary["group"] = [task_group(t) for t in summary["task"]]
    summary["best"], summary["tied"] = False, False
    folds = records.finals.groupby(records.finals["task"].map(fold_free))["task"].unique()
    # ties within one backbone and protocol: across them a gap is not the method's doing
    for (task, backbone, protocol), rows in summary.groupby(["task", "backbone", "protocol"]):
        accuracy = {}
        for method in rows["method"]:
            runs = [records.correct.get((t, backbone, protocol, method), []) for t in folds[task]]
            seeds = [c for fold in runs for c in fold]
            if seeds:
                accuracy[method] = per_example_accuracy(seeds)
        if len(accuracy) == len(rows):
            ties = bootstrap_ties(accuracy, seed=seed)
        else:  # some runs have no test predictions (replayed): the best mean, no tie claimed
            top = rows["test_acc"].max()
            ties = {m: {"best": a == top, "tied": a == top}
                    for m, a in zip(rows["method"], rows["test_acc"], strict=True)}  # fmt: skip
        for index, method in zip(rows.index, rows["method"], strict=True):
            summary.loc[index, "best"] = ties[method]["best"]
            summary.loc[index, "tied"] = ties[method]["tied"]
    for missing in records.missing:  # an unfinished comparison has no winner yet
        same = summary["task"] == fold_free(missing.task)
        if missing.key[:2] != ("", ""):  # (a study never started has no setup tags)
            same &= (summary["backbone"] == missing.key[0]) & (
                summary["protocol"] == missing.key[1]
            )
        summary.loc[same, ["best", "tied"]] = False
    return label_rows(summary)


def several_setups(summary: pd.DataFrame) -> bool:
    """Whether the runs span more than one backbone or protocol (labels then say which)."""
    return len(summary[["backbone", "protocol"]].drop_duplicates()) > 1


def label_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Add ``row`` (the table's label) and ``row_key`` (an MLflow-safe metric prefix).

    One backbone and protocol: the method, as a single sweep's table always showed.
    Otherwise ``method @ backbone``, and ``[protocol]`` where a backbone has two."""
    several = several_setups(summary)
    protocols = summary.groupby("backbone")["protocol"].nunique()
    labels, keys = [], []
    for backbone, protocol, method in summary[ROW_COLUMNS].itertuples(index=False):
        label, parts = method, [method]
        if several:
            label += f" @ {backbone or 'unknown-backbone'}"
            parts.append(backbone or "unknown-backbone")
            if protocols[backbone] > 1:
                label += f" [{protocol or 'untagged'}]"
                parts.append(protocol or "untagged")
        labels.append(label)
        keys.append(re.sub(r"[^\w./\- ]", "_", "/".join(parts)))
    return summary.assign(row=labels, row_key=keys)


def _means(rows: pd.DataFrame, column: str = "test_acc") -> tuple[float, float]:
    """Flat mean over tasks and mean of VTAB group means (FGVC and user tasks count in the
    flat mean only)."""
    grouped = rows[rows["group"].isin(GROUPS)].groupby("group")[column].mean()
    return float(rows[column].mean()), float(grouped.mean())


def method_means(summary: pd.DataFrame) -> pd.DataFrame:
    """Per row (see ``label_rows``): flat and group means, task count and metric prefix."""
    out = []
    for label, rows in summary.groupby("row", sort=False):
        flat, group = _means(rows)
        out.append(
            {
                "row": label,
                "row_key": rows["row_key"].iloc[0],
                "mean_flat": flat,
                "mean_group": group,
                "tasks": len(rows),
            }
        )
    return pd.DataFrame(out).set_index("row")


def ordered(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Tasks and row labels in a stable order: backbone, protocol, then registry order of
    methods (not the order finals happened to finish in); unregistered methods last."""
    tasks = task_order(list(summary["task"]))
    rank = {m: i for i, m in enumerate(list_methods())}
    rows = summary[[*ROW_COLUMNS, "row"]].drop_duplicates()
    keyed = sorted(
        rows.itertuples(index=False),
        key=lambda r: (r.backbone, r.protocol, rank.get(r.method, len(rank)), r.method),
    )
    return tasks, [r.row for r in keyed]


def compare(summary: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Our (row, task) cells that have a published number for the same task, method and
    backbone (compared as timm names, so a preset matches its model): ours, published, Δ."""
    target = resolve_backbone(reference.backbone)
    out = []
    for r in summary.itertuples(index=False):
        # a variant row (``lora (init=trunc_normal)``: a preset's fixed options, e.g. the
        # study's model as built) is compared with the method's published number
        by_method = reference.accuracy.get(r.task, {})
        published = by_method.get(r.method, by_method.get(r.method.split(" (")[0]))
        if published is None or not r.backbone or resolve_backbone(r.backbone) != target:
            continue
        out.append(
            {
                "reference": reference.name,
                "row": r.row,
                "task": r.task,
                "group": r.group,
                **{c: getattr(r, c) for c in ROW_COLUMNS},
                "ours": r.test_acc,
                "published": published,
                "delta": r.test_acc - published,
            }
        )
    columns = ["reference", "row", "task", "group", *ROW_COLUMNS, "ours", "published", "delta"]
    return pd.DataFrame(out, columns=columns)


def _reference_rows(
    label: str, name: str, matched: pd.DataFrame, tasks: list[str]
) -> list[dict[str, Any]]:
    """The published row and the Δ row (ours − published) under our row ``label``; means
    are over the tasks both have, so the two rows compare like with like."""
    cells = matched.set_index("task")
    published: dict[str, Any] = {"method": f"{label} ({name})"}
    delta: dict[str, Any] = {"method": f"Δ {label} (ours − {name})"}
    for task in tasks:
        if task not in cells.index:
            published[task] = delta[task] = MISSING
            continue
        published[task] = _number(100 * cells.loc[task, "published"], "ref")
        delta[task] = _signed(100 * cells.loc[task, "delta"])
    ours, theirs = _means(matched, "ours"), _means(matched, "published")
    for i, column in enumerate(("mean (flat)", "mean (group)")):
        published[column] = _number(100 * theirs[i], "ref")
        delta[column] = _signed(100 * (ours[i] - theirs[i]))
    return [published, delta]


def _number(value: float, style: str = "") -> Cell:
    """One decimal, or the missing mark for NaN (a group mean over no VTAB task)."""
    return MISSING if math.isnan(value) else (f"{value:.1f}", round(value, 3), style)


def _signed(diff: float) -> Cell:
    """A Δ with its sign always shown, styled ``up``/``down`` for the page's colours."""
    if math.isnan(diff):
        return MISSING
    return (f"{diff:+.1f}", round(diff, 3), "up" if diff > 0 else "down" if diff < 0 else "")


def task_shifts(summary: pd.DataFrame, tasks: list[str]) -> dict[str, list[str]]:
    """Per task, the shift columns (``shift/<name>/acc``) some row of it has a number for."""
    columns = shift_columns(summary)
    return {
        task: [c for c in columns if summary.loc[summary["task"] == task, c].notna().any()]
        for task in tasks
    }


def shift_label(task: str, column: str) -> str:
    """The wide table's header of a shift column: ``synth/objects [shift noise]``."""
    return f"{task} [shift {column.split('/')[1]}]"


def _accuracy_cell(r: pd.Series, column: str, style: str = "") -> Cell:
    """``mean ± std`` in percent (the std only with more than one run); missing for NaN."""
    value = r[column]
    if pd.isna(value):
        return MISSING
    text = f"{100 * value:.1f}"
    if r["seeds"] > 1:
        text += f" ± {100 * r[f'{column}_std']:.1f}"
    return (text, round(100 * value, 3), style)


def wide_table(
    summary: pd.DataFrame,
    tune_hours: dict[RowKey, float],
    lost_hours: dict[RowKey, float] | None = None,
    comparisons: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Rows × tasks cells as (text, sort value, style) with means, params and cost; each
    row followed by its published and Δ rows from ``comparisons`` (see ``compare``)."""
    tasks, labels = ordered(summary)
    means = method_means(summary)
    shifts = task_shifts(summary, tasks)
    table = []
    for label in labels:
        rows = summary[summary["row"] == label].set_index("task")
        first = rows.iloc[0]
        key: RowKey = (first["backbone"], first["protocol"], first["method"])
        row: dict[str, Any] = {"method": label}
        for task in tasks:
            if task not in rows.index:
                row[task] = MISSING
                row.update({shift_label(task, c): MISSING for c in shifts[task]})
                continue
            r = rows.loc[task]
            style = "best" if r["best"] else "tied" if r["tied"] else ""
            row[task] = _accuracy_cell(r, "test_acc", style)
            row.update({shift_label(task, c): _accuracy_cell(r, c) for c in shifts[task]})
        for col, name in (("mean_flat", "mean (flat)"), ("mean_group", "mean (group)")):
            value = 100 * means.loc[label, col]
            row[name] = (f"{value:.1f}", round(value, 3), "")
        params = rows["trainable_params_without_head"].max() / 1e6
        row["params M (excl. head)"] = (f"{params:.4f}", params, "")
        row["params M (total)"] = (
            f"{rows['trainable_params'].max() / 1e6:.4f}",
            rows["trainable_params"].max() / 1e6,
            "",
        )
        tune, final = tune_hours.get(key, 0.0), rows["final_device_hours"].sum()
        row["tune device-h"] = (f"{tune:.3f}", tune, "")
        if any((lost_hours or {}).values()):  # only sweeps a crash interrupted show it
            lost = (lost_hours or {}).get(key, 0.0)
            row["lost device-h"] = (f"{lost:.3f}", lost, "")
        row["final device-h"] = (f"{final:.3f}", final, "")
        table.append(row)
        for matched in comparisons or []:
            mine = matched[matched["row"] == label]
            if not mine.empty:
                extra = _reference_rows(label, mine["reference"].iloc[0], mine, tasks)
                table += [{c: r.get(c, MISSING) for c in row} for r in extra]
    return pd.DataFrame(table)
