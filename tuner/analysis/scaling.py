"""``analyze scaling``: accuracy against training-set size, and where PETL meets full FT.

Study 000's many-shot arm asks whether PETL's edge over full fine-tuning survives more data.
A data-size sweep trains the same task at several sizes, ``T@n#k`` (n images, fold k: see
``tuner.data.subsets``), with the plain task ``T`` as its full size. Per (task, method, n):
seeds are averaged within a fold, then mean ± std over folds (one fold: over its seeds),
the leaderboard's rule. Protocols are deliberately not split apart: the study trains small
n longer than large n (``many_shot`` and ``many_shot_large``), and one line per method must
span both.

Outputs: the table; one PNG per task (accuracy vs n, log x, one line per method, error bars
= std); and a summary of the smallest n at which each PETL method's mean reaches or passes
full fine-tuning (``-o reference=METHOD`` to compare with another), "always" when it does
at every size both have, "never" when at none.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

from tuner.analysis.figures import save_figure
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.data.subsets import parse_task
from tuner.data.tasks import get_task
from tuner.leaderboard.collect import row_key
from tuner.tracking.client import TrackingService

#: Suites whose plain task trains on the VTAB-1k ``train800`` split (when a run lacks the
#: dataset record that states its size).
TRAIN800_SUITES = ("synth", "vtab1k")
KEYS = ["task", "row", "backbone", "method", "n"]
#: What a task id may not keep in a file name
SLUG = re.compile(r"[^\w.-]")


def logged_train_size(tracker: TrackingService, run_id: str) -> int | None:
    """The train split size in the run's MLflow dataset input (what the sweep decoded:
    ``splits.train800`` holds the train split, subset or full, whatever its name)."""
    for entry in tracker.client.get_run(run_id).inputs.dataset_inputs or []:
        try:
            size = json.loads(entry.dataset.profile or "{}").get("train800")
        except ValueError:
            continue
        if size:
            return int(size)
    return None


def run_size(tracker: TrackingService, run: dict) -> int:
    """A final run's training-set size: n of ``T@n``; else its dataset record; else 800
    for a plain VTAB-layout task. Unknown is an ``AnalysisError`` naming the run."""
    task = run["tags"]["task"]
    ref = parse_task(task)
    if ref.subset is not None and ref.subset.count is not None:
        return ref.subset.count
    logged = logged_train_size(tracker, run["run_id"])
    if logged:
        return logged
    if ref.subset is None and get_task(ref.base).suite in TRAIN800_SUITES:
        return 800
    raise AnalysisError(
        f"final run {run['run_id']} ({task}): training-set size unknown (no dataset input "
        "with split sizes); name sizes as T@n"
    )


def size_runs(trackers: list[TrackingService]) -> pd.DataFrame:
    """One row per finished final run: base task, method row, n, fold, seed, test acc."""
    rows = []
    for tracker in trackers:
        for run in tracker.find({"stage": "final"}):
            tags = run["tags"]
            backbone, _, method = row_key(tags)
            ref = parse_task(tags["task"])
            rows.append(
                {
                    "task": ref.base,
                    "backbone": backbone,
                    "method": method,
                    "n": run_size(tracker, run),
                    "fold": ref.subset.fold if ref.subset else 0,
                    "seed": int(tags.get("seed", 0)),
                    "test_acc": run["metrics"]["test/acc"],
                }
            )
    if not rows:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs in experiment(s) {names}")
    frame = pd.DataFrame(rows)
    several = frame["backbone"].nunique() > 1
    frame["row"] = [
        f"{m} @ {b or 'unknown-backbone'}" if several else m
        for m, b in zip(frame["method"], frame["backbone"], strict=True)
    ]
    return frame


def size_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, row, n): mean ± std of test accuracy, seeds within a fold first."""
    folds = (
        runs.groupby([*KEYS, "fold"], sort=False)["test_acc"]
        .agg(fold_acc="mean", seed_std="std", seeds="count")
        .reset_index()
    )
    table = (
        folds.groupby(KEYS, sort=False)
        .agg(
            test_acc=("fold_acc", "mean"),
            fold_std=("fold_acc", "std"),
            seed_std=("seed_std", "first"),
            folds=("fold", "nunique"),
            seeds=("seeds", "sum"),
        )
        .reset_index()
    )
    std = table.pop("fold_std").where(table["folds"] > 1, table.pop("seed_std"))
    table.insert(table.columns.get_loc("test_acc") + 1, "test_acc_std", std.fillna(0.0))
    return table.sort_values(["task", "row", "n"]).reset_index(drop=True)


def crossing(petl: pd.Series, full: pd.Series) -> tuple[str, list[int]]:
    """(smallest n where ``petl`` ≥ ``full``, or "always"/"never"; every such n), over the
    sizes both have (``petl``/``full``: mean accuracy indexed by n)."""
    common = sorted(set(petl.index) & set(full.index))
    reached = [int(n) for n in common if petl[n] >= full[n]]
    if not reached:
        return "never", reached
    if len(reached) == len(common):
        return "always", reached
    return str(reached[0]), reached


def crossings(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per task and non-reference row: where it meets the reference row of its backbone."""
    out = []
    for (task, _), rows in table.groupby(["task", "backbone"], sort=False):
        full = rows[rows["method"] == reference].set_index("n")["test_acc"]
        for label, mine in rows[rows["method"] != reference].groupby("row", sort=False):
            petl = mine.set_index("n")["test_acc"]
            when, reached = crossing(petl, full) if len(full) else (f"no {reference}", [])
            out.append(
                {
                    "task": task,
                    "method": label,
                    f"reaches_{reference}_at_n": when,
                    "sizes_at_or_above": ", ".join(map(str, reached)) or "–",
                    "sizes_compared": len(set(petl.index) & set(full.index)),
                    "acc_smallest_n": float(petl.iloc[0]),
                    "acc_largest_n": float(petl.iloc[-1]),
                }
            )
    return pd.DataFrame(out)


def scaling_png(table: pd.DataFrame, task: str, path: Path) -> Path:
    """Accuracy (%) against training-set size (log x) for one task, a line per method."""
    rows = table[table["task"] == task]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, line in rows.groupby("row", sort=False):
        ax.errorbar(
            line["n"],
            100 * line["test_acc"],
            yerr=100 * line["test_acc_std"],
            marker="o",
            capsize=3,
            label=str(label),
        )
    ax.set_xscale("log")
    # ticks at the sizes trained, as plain numbers (readable, and no mathtext to typeset)
    sizes = sorted(set(rows["n"]))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("training-set size n (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{task}: accuracy vs training-set size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


@analysis("scaling")
def scaling(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Accuracy vs training-set size per task and method, and where each meets full FT."""
    reference = options.get("reference", "full")
    table = size_table(size_runs(trackers))
    sizes = table.groupby("task")["n"].nunique()
    tasks = [t for t in sizes.index if sizes[t] >= 2]
    if not tasks:
        found = ", ".join(f"{t} ({k} size)" for t, k in sizes.items())
        raise AnalysisError(
            f"scaling needs a task at 2 or more training-set sizes (T@n#k, T); found {found}"
        )
    table = table[table["task"].isin(tasks)].reset_index(drop=True)
    plots = [scaling_png(table, t, out / f"scaling_{SLUG.sub('_', t)}.png") for t in tasks]
    summary = crossings(table, reference)
    if summary.empty:
        summary = table.copy()  # one method only: the curve's numbers are the summary
    return Output(
        table=table,
        plots=plots,
        summary=summary,
        title=f"Accuracy vs training-set size, and where each method reaches {reference}",
    )
