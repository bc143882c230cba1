"""``analyze allocation``: where SPT puts its budget, per task (study 002's question).

SPT's claim is that the right positions to tune depend on the task. Every SPT final run
logs ``allocation.parquet`` (one row per unit that received parameters, see
:mod:`tuner.methods.spt.allocation_table`); this kind reads them all and reports, per task
and per method variant (``spt_lora``, ``spt_lora (random)``, ``spt_lora (structured-only)``…,
named after the ablation options a run was given):

* the share of the realised budget per block depth (the final norm is its own column
  ``norm``) and per operation (q, k, v, proj, fc1, fc2, and ``vectors``: norm affines and
  biases), and per kind (structured module, unstructured entries, whole vector);
* ``tv_from_mean``: the total-variation distance between the task's depth × operation shares
  and their mean over the variant's tasks: 0 when every task gets the same allocation.

Shares are fractions of the run's realised SPT budget (head and class token excluded, as in
the table), averaged over seeds, so they sum to 1 per (task, variant). Plots: a tasks × depth
heatmap and a stacked bar of operation shares per task, one panel per variant, plus the kind
shares per task.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tuner import methods
from tuner.analysis.figures import save_figure
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.leaderboard.collect import row_key
from tuner.methods.spt.allocation_table import MATRICES, unit_label
from tuner.methods.spt.method import SPTMethod
from tuner.tracking.client import TrackingService

ARTIFACT = "allocation.parquet"
OPERATIONS = (*MATRICES, "vectors")
KIND_OF = {"lora": "structured", "adapter": "structured", "unstructured": "unstructured"}
KINDS = ("structured", "unstructured", "whole")
#: Ablation options and how a variant's name shows a non-default value.
ABLATIONS = {
    "allocation": lambda v: v,
    "allocation_mode": lambda v: f"{v}-only",
    "sensitivity_batches": lambda v: f"batches={v}",
}
GROUP = ["task", "backbone", "protocol", "variant"]


def variant(method: str, params: dict[str, str]) -> str:
    """``spt_lora`` for SPT's defaults, else e.g. ``spt_lora (random, structured-only)``
    (no square brackets: the console table would read them as markup)."""
    tags = []
    for key, show in ABLATIONS.items():
        default = SPTMethod.defaults()[key]
        if key in params and str(params[key]) != str(default):
            tags.append(show(params[key]))
    return f"{method} ({', '.join(tags)})" if tags else method


def operation(unit: str) -> str:
    """q/k/v/proj/fc1/fc2 for block matrices, ``vectors`` for every vector."""
    label = unit_label(unit).split(".")[-1]  # "mlp.fc1" → "fc1"; "attn.proj.bias" → "bias"
    return label if label in MATRICES else "vectors"


def run_shares(alloc: pd.DataFrame) -> pd.DataFrame:
    """One run's table as shares of its realised budget per (depth, operation, kind)."""
    total = float(alloc["trainable"].sum())
    if total <= 0:
        return pd.DataFrame(columns=["depth", "operation", "kind", "params", "share"])
    frame = pd.DataFrame(
        {
            "depth": alloc["block"].where(alloc["block"] != "final", "norm"),
            "operation": alloc["unit"].map(operation),
            "kind": alloc["allocation"].map(lambda k: KIND_OF.get(k, "whole")),
            "params": alloc["trainable"].astype(float),
        }
    )
    frame = frame.groupby(["depth", "operation", "kind"], as_index=False)["params"].sum()
    frame["share"] = frame["params"] / total
    return frame


def _is_spt(method: str) -> bool:
    """Only SPT methods log an allocation: other final runs are not even listed."""
    return method in methods.list_methods() and issubclass(methods.method_class(method), SPTMethod)


def allocation_records(trackers: list[TrackingService]) -> pd.DataFrame:
    """Every SPT final run's shares, one row per (run, depth, operation, kind)."""
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            for run in tracker.find({"stage": "final"}):
                if not _is_spt(run["tags"].get("method", "")):
                    continue
                names = {a.path for a in tracker.client.list_artifacts(run["run_id"])}
                if ARTIFACT not in names:
                    continue
                path = tracker.download(run["run_id"], ARTIFACT, Path(tmp) / run["run_id"])
                shares = run_shares(pd.read_parquet(path))
                backbone, protocol, method = row_key(run["tags"])
                shares["task"] = run["tags"]["task"]
                shares["backbone"], shares["protocol"] = backbone, protocol
                shares["variant"] = variant(method, run["params"])
                shares["run_id"] = run["run_id"]
                parts.append(shares)
    if not parts:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(
            f"no final run with an SPT allocation record ({ARTIFACT}) in experiment(s) {names}"
        )
    return pd.concat(parts, ignore_index=True)


def allocation_table(records: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean shares per (task, variant, depth, operation, kind); sums to 1 per group."""
    runs = records.groupby(GROUP)["run_id"].nunique().rename("seeds")
    cells = records.groupby([*GROUP, "depth", "operation", "kind"], as_index=False).agg(
        params=("params", "sum"), share=("share", "sum")
    )
    cells = cells.join(runs, on=GROUP)
    cells["params"] /= cells["seeds"]
    cells["share"] /= cells["seeds"]
    return cells.sort_values([*GROUP, "depth", "operation", "kind"], key=_depth_order)


def _depth_order(col: pd.Series) -> pd.Series:
    if col.name != "depth":
        return col
    return col.map(lambda d: 10**6 if d == "norm" else int(d))


def task_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, variant): budget, kind and operation shares, depth centre, tv."""
    rows: list[dict[str, Any]] = []
    for key, part in table.groupby(GROUP, sort=False):
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        row["seeds"] = int(part["seeds"].iloc[0])
        row["budget"] = float(part["params"].sum())
        for kind in KINDS:
            row[kind] = float(part.loc[part["kind"] == kind, "share"].sum())
        for op in OPERATIONS:
            row[op] = float(part.loc[part["operation"] == op, "share"].sum())
        blocks = part[part["depth"] != "norm"]
        weight = float(blocks["share"].sum())
        centre = (blocks["depth"].astype(int) * blocks["share"]).sum() / weight if weight else 0.0
        row["depth_centre"] = float(centre)
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["tv_from_mean"] = _tv_from_mean(table, summary)
    return summary


def compact_summary(tasks: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """What the console and the page show: kinds, the leading operation and depth, tv."""
    out = tasks[["task", "variant", "budget", *KINDS]].copy()
    out["budget"] = out["budget"].round()
    ops = tasks[list(OPERATIONS)].astype(float)
    out["top_operation"] = [f"{op} ({ops.at[i, op]:.2f})" for i, op in ops.idxmax(axis=1).items()]
    depth = table.groupby([*GROUP, "depth"])["share"].sum().unstack("depth", fill_value=0.0)
    depth = depth.reindex(pd.MultiIndex.from_frame(tasks[GROUP]))
    out["top_depth"] = [f"{d} ({depth.iloc[i][d]:.2f})" for i, d in enumerate(depth.idxmax(axis=1))]
    out["depth_centre"] = tasks["depth_centre"]
    out["tv_from_mean"] = tasks["tv_from_mean"]
    return out.round(3)


def _tv_from_mean(table: pd.DataFrame, summary: pd.DataFrame) -> list[float]:
    """Half the L1 distance of each task's depth × operation shares from its variant's mean."""
    grid = table.pivot_table(
        index=GROUP, columns=["depth", "operation"], values="share", aggfunc="sum", fill_value=0
    )
    out = []
    for _, row in summary.iterrows():
        key = tuple(row[g] for g in GROUP)
        peers = grid.xs(row["variant"], level="variant", drop_level=False)
        out.append(float(0.5 * np.abs(grid.loc[key] - peers.mean()).sum()))
    return out


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(v, table[table["variant"] == v]) for v in dict.fromkeys(table["variant"])]


def _depths(table: pd.DataFrame) -> list[str]:
    return sorted(set(table["depth"]), key=lambda d: 10**6 if d == "norm" else int(d))


def depth_heatmap(table: pd.DataFrame, path: Path) -> Path:
    """Tasks × depth share of the budget, one panel per variant."""
    panels, depths = _panels(table), _depths(table)
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(0.45 * len(depths) * len(panels) + 2.5, 0.4 * len(tasks) + 2),
        squeeze=False,
    )
    for ax, (name, part) in zip(axes[0], panels, strict=True):
        grid = part.pivot_table(index="task", columns="depth", values="share", aggfunc="sum")
        grid = grid.reindex(index=tasks, columns=depths).fillna(0.0)
        image = ax.imshow(grid.to_numpy(), cmap="magma", vmin=0, aspect="auto")
        ax.set_xticks(range(len(depths)), depths, fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
        ax.set_xlabel("block depth")
        ax.set_title(name, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, label="share of budget")
    return save_figure(
        fig, path, "SPT allocation: share of the budget per block depth", fontsize=10, dpi=120
    )


def stacked_bars(table: pd.DataFrame, column: str, order: tuple[str, ...], path: Path) -> Path:
    """Per task, the budget's shares by ``column`` (operation or kind), one panel per variant."""
    panels = _panels(table)
    tasks = list(dict.fromkeys(table["task"]))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(0.6 * len(tasks) * len(panels) + 3, 3.8), squeeze=False
    )
    for ax, (name, part) in zip(axes[0], panels, strict=True):
        shares = part.pivot_table(index="task", columns=column, values="share", aggfunc="sum")
        shares = shares.reindex(index=tasks, columns=list(order)).fillna(0.0)
        bottom = np.zeros(len(tasks))
        for i, value in enumerate(order):
            ax.bar(tasks, shares[value], bottom=bottom, color=colours(i), label=value)
            bottom += shares[value].to_numpy()
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    axes[0][0].set_ylabel("share of budget")
    axes[0][-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    return save_figure(
        fig, path, f"SPT allocation: share of the budget per {column}", fontsize=10, dpi=120
    )


@analysis("allocation")
def allocation(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Where SPT's budget goes per task: depth, operation and kind shares."""
    table = allocation_table(allocation_records(trackers))
    tasks = task_table(table)
    tasks_path = out / "allocation.tasks.parquet"
    tasks.to_parquet(tasks_path, index=False)
    plots = [
        depth_heatmap(table, out / "allocation_depth.png"),
        stacked_bars(table, "operation", OPERATIONS, out / "allocation_operations.png"),
        stacked_bars(table, "kind", KINDS, out / "allocation_kinds.png"),
    ]
    return Output(
        table=table.reset_index(drop=True),
        plots=plots,
        summary=compact_summary(tasks, table),
        extra=[tasks_path],
        title="SPT allocation across tasks: share of the budget per depth, operation and kind",
    )
