"""``analyze wise``: WiSE-FT along α, target accuracy against shift-set accuracy.

Study 000 finds that moving a tuned model part of the way back towards its pretrained
backbone in weight space trades a little target accuracy for robustness under distribution
shift. For every final run the model is rebuilt from MLflow (``config.json`` through the
``Trainer``, then ``trainable.safetensors``) and put at each α of ``-o alphas=...`` (default
0, 0.1, ..., 1; see ``tuner.analysis.interpolate`` for what α moves), then evaluated on the
task's val, test and every shift set of the run's spec (none: target only).

Per run the best α is chosen on *validation*, never on test or shift sets. Caveat: final
runs train on train800val200, so val200 is training data for them and the choice leans to
α = 1; ``test_acc_tuned``/``shift_acc_tuned`` (α = 1) are reported beside it so the
trade-off is visible either way. ``-o data_root=DIR`` replaces the stored data root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from tuner import methods
from tuner.analysis.figures import save_figure
from tuner.analysis.interpolate import WeightPath
from tuner.analysis.models import final_spec, run_label, trainable_tensors
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.backbones import create_backbone, input_spec
from tuner.data import TaskData, load_task
from tuner.leaderboard.collect import row_key
from tuner.tracking.client import TrackingService, fetch_artifact
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

ALPHAS = [round(0.1 * i, 1) for i in range(11)]
KEYS = ["run_id", "task", "backbone", "protocol", "method", "seed"]


def parse_alphas(options: dict[str, str]) -> list[float]:
    text = options.get("alphas")
    if text is None:
        return ALPHAS
    try:
        alphas = sorted({float(a) for a in text.split(",") if a.strip()})
    except ValueError:
        alphas = []
    if not alphas or not all(0.0 <= a <= 1.0 for a in alphas):
        raise AnalysisError(f"option alphas must be numbers in [0, 1] like 0,0.5,1; got {text!r}")
    return alphas


def label(run: dict[str, Any]) -> str:
    return f"final {run_label(run)}"


def run_spec(tracker: TrackingService, run: dict[str, Any], data_root: str | None) -> TrialSpec:
    """The run's ``TrialSpec`` (shift sets included), checked before anything is built."""
    spec = final_spec(tracker, run, data_root, shifts=True)
    if not spec.train.pretrained:
        raise AnalysisError(f"{label(run)} trained from scratch: no pretrained backbone")
    for name, path in spec.shifts.items():
        if not Path(path).exists():
            raise AnalysisError(f"{label(run)}: shift set {name!r} is missing at {path}")
    return spec


class Rebuilder:
    """Rebuilds final runs, loading each task's data and each backbone's pretrained
    weights once for all runs that share them."""

    def __init__(self) -> None:
        self.data: dict[tuple, TaskData] = {}
        self.pretrained: dict[tuple, dict[str, torch.Tensor]] = {}

    def task_data(self, spec: TrialSpec) -> TaskData:
        key = (spec.task, spec.data_root, spec.backbone, tuple(sorted(spec.shifts.items())))
        if key not in self.data:
            inputs = input_spec(spec.backbone)
            try:
                self.data[key] = load_task(spec.task, Path(spec.data_root), inputs.size,
                                           interpolation=inputs.interpolation,
                                           shifts=spec.shifts)  # fmt: skip
            except (OSError, ValueError, KeyError) as err:
                raise AnalysisError(
                    f"task {spec.task}: cannot load its data under {spec.data_root!r} "
                    f"(-o data_root=DIR sets another): {str(err).splitlines()[0]}"
                ) from err
        return self.data[key]

    def backbone(self, spec: TrialSpec) -> dict[str, torch.Tensor]:
        key = (spec.backbone, spec.weights)
        if key not in self.pretrained:
            try:
                model = create_backbone(spec.backbone, 0, pretrained=True, weights=spec.weights)
            except (OSError, ValueError, RuntimeError) as err:
                why = str(err).splitlines()[0]
                raise AnalysisError(f"backbone {spec.backbone}: {why}") from err
            self.pretrained[key] = {n: p.detach() for n, p in model.named_parameters()}
        return self.pretrained[key]

    def path(
        self, tracker: TrackingService, run: dict[str, Any], spec: TrialSpec
    ) -> tuple[Trainer, WeightPath]:
        """(trainer holding model and data, its ``WeightPath``)."""
        tensors = trainable_tensors(tracker, run)
        data = self.task_data(spec)
        try:
            trainer = Trainer(spec, data, fetch=fetch_artifact)
        except (OSError, ValueError, KeyError) as err:
            raise AnalysisError(f"cannot rebuild {label(run)}: {str(err).splitlines()[0]}") from err
        return trainer, WeightPath(trainer.model, trainer.method, tensors, self.backbone(spec))


def sweep_run(trainer: Trainer, path: WeightPath, alphas: list[float]) -> list[dict[str, float]]:
    """Accuracy on val, test and each shift set at every α (once if α moves nothing)."""
    assert trainer.data is not None
    shifts = list(trainer.data.shifts)
    rows: list[dict[str, float]] = []
    for alpha in alphas:
        if rows and not path.moves:
            rows.append({**rows[-1], "alpha": alpha})
            continue
        path.set_alpha(alpha)
        row = {"alpha": alpha, "val_acc": trainer.evaluate("val")}
        row["test_acc"] = trainer.evaluate("test")
        each = {f"shift/{n}/acc": trainer.evaluate(f"shift:{n}") for n in shifts}
        row["shift_acc"] = sum(each.values()) / len(each) if each else float("nan")
        rows.append({**row, **each})
    return rows


def wise_table(
    trackers: list[TrackingService], alphas: list[float], data_root: str | None
) -> pd.DataFrame:
    """One row per (final run, α); runs are all checked before any is evaluated."""
    todo = []
    for tracker in trackers:
        for run in tracker.find({"stage": "final"}):
            todo.append((tracker, run, run_spec(tracker, run, data_root)))
    if not todo:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs in experiment(s) {names}")
    rebuilder, rows = Rebuilder(), []
    for tracker, run, spec in todo:
        trainer, path = rebuilder.path(tracker, run, spec)
        backbone, protocol, method = row_key(run["tags"])
        keys = dict(zip(KEYS, [run["run_id"], spec.task, backbone, protocol, method,
                               int(run["tags"].get("seed", spec.seed))], strict=True))  # fmt: skip
        logged = run["metrics"].get("test/acc", float("nan"))
        for row in sweep_run(trainer, path, alphas):
            rows.append({**keys, **row, "logged_test_acc": logged})
    return pd.DataFrame(rows)


def best_alpha(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: the α with the best val accuracy (ties: the larger α, nearer the tuned
    model), its test and shift accuracy, and the same at α = 1."""
    rows = []
    for _, run in table.groupby("run_id", sort=False):
        best = run.sort_values(["val_acc", "alpha"], ascending=False).iloc[0]
        tuned = run[run["alpha"] == run["alpha"].max()].iloc[0]
        rows.append(
            {
                **{k: best[k] for k in KEYS},
                "best_alpha": best["alpha"],
                "val_acc": best["val_acc"],
                "test_acc": best["test_acc"],
                "shift_acc": best["shift_acc"],
                "test_acc_tuned": tuned["test_acc"],
                "shift_acc_tuned": tuned["shift_acc"],
                "logged_test_acc": best["logged_test_acc"],
            }
        )
    return pd.DataFrame(rows)


def summarise(best: pd.DataFrame) -> pd.DataFrame:
    """Seed means per (task, backbone, protocol, method); backbone and protocol are left
    out when every run shares them (they stay in the full table)."""
    cols = ["best_alpha", "test_acc", "shift_acc", "test_acc_tuned", "shift_acc_tuned"]
    group = best.groupby(["task", "backbone", "protocol", "method"], sort=False)
    summary = group[cols].mean().reset_index().assign(seeds=group.size().to_numpy())
    # one backbone and protocol (the usual case): the columns only crowd the console
    constant = [c for c in ("backbone", "protocol") if summary[c].nunique() == 1]
    return summary.drop(columns=constant)


def robustness_plot(table: pd.DataFrame, path: Path) -> Path:
    """Per task: test accuracy vs mean shift accuracy along α, one line per method (seed
    means; square α = 0, star α = 1); without shift sets, test accuracy against α."""
    tasks = list(dict.fromkeys(table["task"]))
    order = methods.list_methods()
    ranked = sorted(set(table["method"]), key=lambda m: (order.index(m) if m in order else 99, m))
    colour = {m: f"C{i % 10}" for i, m in enumerate(ranked)}  # one colour per method throughout
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks) + 1, 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        part = table[table["task"] == task]
        curves = part.groupby(["method", "alpha"])[["test_acc", "shift_acc"]].mean()
        shifted = curves["shift_acc"].notna().all()
        for method in [m for m in ranked if m in set(part["method"])]:
            curve, c = curves.loc[method], colour[method]
            x = curve["test_acc"] if shifted else curve.index.to_series()
            y = curve["shift_acc"] if shifted else curve["test_acc"]
            ax.plot(x, y, "o-", color=c, ms=3, label=method)
            ax.scatter(x.iloc[[0]], y.iloc[[0]], marker="s", s=40, color=c)
            ax.scatter(x.iloc[[-1]], y.iloc[[-1]], marker="*", s=90, color=c)
        ax.set_xlabel("target test accuracy" if shifted else "alpha", fontsize=8)
        ax.set_ylabel("mean shift-set accuracy" if shifted else "target test accuracy", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=6)
    return save_figure(
        fig, path, "WiSE-FT: pretrained (square) to tuned (star) along alpha", fontsize=9, dpi=120
    )


@analysis("wise")
def wise(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """The α sweep of every final run; summary: best α on val per method (seed means)."""
    table = wise_table(trackers, parse_alphas(options), options.get("data_root"))
    best = best_alpha(table)
    best_file = out / "wise.best.parquet"
    best.to_parquet(best_file, index=False)
    return Output(
        table,
        [robustness_plot(table, out / "wise.png")],
        summarise(best),
        "WiSE-FT: best alpha on validation, its test and shift accuracy (seed means)",
        extra=[best_file],
    )
