"""``analyze quadrant``: study 001's figure, domain gap against the test gap of two methods.

x is a task's Fréchet distance to the upstream data (the newest ``domain-gap`` analysis run
of the experiments, or computed now when there is none, or with ``-o gap=compute``); y is
``test/acc`` of method ``a`` minus that of ``b`` (``-o a=vpt_deep -o b=full`` by default;
final runs, mean over seeds). Points are coloured by group (VTAB natural / specialized /
structured, the synth suite's echo of them) and sized by training size when the experiment
holds several sizes (``T@n`` subsets). Each task falls in a quadrant: gap above or below
the median gap of the tasks plotted, and ``a`` better or worse than ``b`` (equal: a tie).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tuner.analysis.domain_gap import GROUP_COLOURS, gap_table
from tuner.analysis.figures import save_figure
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.tracking.client import TrackingService

GAP_ARTIFACT = "analysis/domain-gap.parquet"
KEYS = ["task", "backbone"]


def newest_gap_table(trackers: list[TrackingService]) -> pd.DataFrame | None:
    """The table of the newest ``domain-gap`` analysis run of the experiments, if any."""
    runs = [(t, r) for t in trackers for r in t.find({"analysis": "domain-gap"})]
    if not runs:
        return None
    tracker, run = max(runs, key=lambda tr: tr[1]["start_time"] or 0)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(run["run_id"], GAP_ARTIFACT, Path(tmp))
        except Exception as err:
            raise AnalysisError(
                f"domain-gap run {run['run_id']} has no {GAP_ARTIFACT}; rerun analyze domain-gap"
            ) from err
        return pd.read_parquet(path)


def test_accuracy(trackers: list[TrackingService]) -> pd.DataFrame:
    """Mean ``test/acc`` over seeds per (task, backbone, method) of finished final runs."""
    rows = [
        {
            "task": r["tags"]["task"],
            "backbone": r["tags"].get("backbone", ""),
            "method": r["tags"]["method"],
            "test_acc": r["metrics"]["test/acc"],
        }
        for t in trackers
        for r in t.find({"stage": "final"})
        if "test/acc" in r["metrics"] and "task" in r["tags"] and "method" in r["tags"]
    ]
    if not rows:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs with test/acc in experiment(s) {names}")
    frame = pd.DataFrame(rows)
    return frame.groupby([*KEYS, "method"], sort=False)["test_acc"].agg(["mean", "count"])


def test_gaps(acc: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per (task, backbone) with both methods: their accuracies and ``a − b``."""
    methods = set(acc.index.get_level_values("method"))
    for name in (a, b):
        if name not in methods:
            raise AnalysisError(
                f"method {name!r} has no final runs; present: {', '.join(sorted(methods))}"
            )
    wide = acc["mean"].unstack("method")[[a, b]].dropna()
    if wide.empty:
        raise AnalysisError(f"no task has final runs of both {a} and {b}")
    seeds = acc["count"].unstack("method")[[a, b]].loc[wide.index].min(axis=1)
    out = wide.rename(columns={a: "acc_a", b: "acc_b"}).reset_index()
    out["seeds"] = seeds.to_numpy().astype(int)
    out["test_gap"] = out["acc_a"] - out["acc_b"]
    return out


def assign_quadrants(table: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Add ``gap_side`` (above / below the median ``frechet``), ``winner`` and
    ``quadrant``. A gap equal to the median counts as below; a zero test gap is a tie."""
    median = float(table["frechet"].median())
    out = table.copy()
    out["gap_median"] = median
    out["gap_side"] = np.where(out["frechet"] > median, "above", "below")
    out["winner"] = np.select(
        [out["test_gap"] > 0, out["test_gap"] < 0], [f"{a} better", f"{b} better"], "tie"
    )
    out["quadrant"] = out["gap_side"] + " median gap, " + out["winner"]
    return out


def quadrant_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Which tasks fall in which quadrant (the table the study reads)."""
    return (
        table.groupby("quadrant", sort=True)
        .agg(tasks=("task", lambda s: ", ".join(s)), n=("task", "size"),
             mean_test_gap=("test_gap", "mean"))
        .reset_index()
    )  # fmt: skip


def quadrant_plot(table: pd.DataFrame, a: str, b: str, path: Path) -> Path:
    """The scatter: x gap (± bootstrap std), y test gap (points), median gap and zero."""
    fig, ax = plt.subplots(figsize=(7, 5))
    sizes = table["train_size"].astype(float)
    several = sizes.nunique() > 1
    area = 30 + 170 * (sizes - sizes.min()) / (sizes.max() - sizes.min()) if several else 60
    for group, part in table.groupby("group", sort=False):
        colour = GROUP_COLOURS.get(str(group), "gray")
        size = area[part.index] if several else area
        ax.scatter(part["frechet"], 100 * part["test_gap"], s=size, c=colour, label=group)
    ax.errorbar(table["frechet"], 100 * table["test_gap"], xerr=table["boot_std"].fillna(0),
                fmt="none", ecolor="gray", elinewidth=0.8, alpha=0.6)  # fmt: skip
    for row in table.itertuples():
        ax.annotate(row.task.split("/")[-1], (row.frechet, 100 * row.test_gap), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    ax.axvline(float(table["gap_median"].iloc[0]), color="k", ls="--", lw=0.8)
    ax.axhline(0.0, color="k", ls="--", lw=0.8)
    ax.set_xlabel("domain gap (Fréchet distance to upstream features)")
    ax.set_ylabel(f"test accuracy {a} − {b} (points)")
    title = f"{a} vs {b}: when does it win?"
    ax.set_title(title + (" (size = training set size)" if several else ""), fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


@analysis("quadrant")
def quadrant(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Tasks by domain gap and by which of two methods wins on test."""
    a, b = options.get("a", "vpt_deep"), options.get("b", "full")
    if a == b:
        raise AnalysisError(f"-o a= and -o b= name the same method {a!r}")
    gaps_from = options.get("gap", "newest")
    if gaps_from not in ("newest", "compute"):
        raise AnalysisError(f"-o gap= must be newest or compute, got {gaps_from!r}")
    tests = test_gaps(test_accuracy(trackers), a, b)
    gaps = newest_gap_table(trackers) if gaps_from == "newest" else None
    if gaps is None:
        gaps = gap_table(trackers, options)
    keep = ["frechet", "boot_std", "group", "train_size"]
    merged = tests.merge(gaps[[*KEYS, *keep]], on=KEYS, how="inner")
    if merged.empty:
        raise AnalysisError("no task with final runs of both methods has a domain gap")
    table = assign_quadrants(merged.reset_index(drop=True), a, b)
    table.insert(2, "method_a", a)
    table.insert(3, "method_b", b)
    return Output(
        table,
        [quadrant_plot(table, a, b, out / "quadrant.png")],
        quadrant_summary(table),
        f"Quadrant: domain gap × test gap {a} − {b} over {len(table)} task(s)",
    )
