"""``analyze ensemble``: do ensembles of tuned methods beat the best single method?

Study 000 finds that PETL methods which tie in accuracy make different mistakes, so their
ensembles gain. For every task (and backbone, protocol) over seed-matched final runs:

* ``all``: every method; ``top<k>``: the k methods with the best *validation* accuracy (the
  study run's ``best_val_acc``; never test), ``-o k=3`` by default;
* ``seeds``: the seeds of one method, for each method: the baseline an ensemble of *methods*
  must beat, since it also averages several models.

Each is combined two ways: ``mean_prob`` (argmax of the mean softmax probability) and
``vote`` (majority of the members' predictions; a tie goes to the tied class with the
higher mean probability). Method ensembles are built per seed (the s-th seed of every
member) and their accuracy is the seed mean. The baseline, ``best_single``, is the method
with the best seed-mean *test* accuracy: an oracle choice, so a gain over it is
conservative. ``tied`` is the paired bootstrap of ``tuner.leaderboard.stats`` over test
examples (seeds averaged per example first), as the leaderboard uses for its ties.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tuner import methods
from tuner.analysis.figures import save_figure
from tuner.analysis.run import AnalysisError, Output, analysis
from tuner.leaderboard.collect import final_runs, row_key
from tuner.leaderboard.stats import bootstrap_ties, per_example_accuracy
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

REGISTRY = methods.list_methods()
GroupKey = tuple[str, str, str]  # task, backbone, protocol
Combiner = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Member:
    """One final run as an ensemble member: softmax probabilities, labels, its study's
    validation accuracy (None where nothing was logged)."""

    method: str
    seed: int
    probs: np.ndarray
    label: np.ndarray
    val_acc: float | None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def mean_prob(probs: list[np.ndarray]) -> np.ndarray:
    """Predicted class of the mean softmax probability of the members."""
    return np.mean(probs, axis=0).argmax(axis=1)


def majority_vote(probs: list[np.ndarray]) -> np.ndarray:
    """Most-voted class; among tied classes, the one with the higher mean probability.

    Vote counts differ by at least 1 and half a mean probability by at most 0.5, so the
    tie-break never overturns a vote."""
    n, classes = probs[0].shape
    votes = np.zeros((n, classes))
    for p in probs:
        votes[np.arange(n), p.argmax(axis=1)] += 1
    return (votes + 0.5 * np.mean(probs, axis=0)).argmax(axis=1)


COMBINERS: dict[str, Combiner] = {"mean_prob": mean_prob, "vote": majority_vote}


def study_val_acc(tracker: TrackingService) -> dict[str, float]:
    """Study key → the study's best validation accuracy (its parent run's metric)."""
    out = {}
    for run in tracker.find({"stage": "tune"}):
        metrics, tags = run["metrics"], run["tags"]
        if PARENT_RUN_TAG in tags or "study" not in tags:
            continue
        value = metrics.get("best_val_acc", metrics.get("val/acc"))
        if value is not None and np.isfinite(value):
            out[tags["study"]] = float(value)
    return out


def load_members(trackers: list[TrackingService]) -> dict[GroupKey, dict[str, list[Member]]]:
    """Every finished final run as a ``Member``, grouped by (task, backbone, protocol) and
    method, seeds in order. No final run, or one without predictions: ``AnalysisError``."""
    groups: dict[GroupKey, dict[str, list[Member]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            val = study_val_acc(tracker)
            try:
                runs = list(final_runs(tracker, Path(tmp)))
            except LookupError as err:
                raise AnalysisError(str(err.args[0])) from err
            for run, logits, labels in runs:
                tags = run["tags"]
                backbone, protocol, method = row_key(tags)
                acc = val.get(tags.get("study", ""), run["metrics"].get("val/acc"))
                groups[(tags["task"], backbone, protocol)][method].append(
                    Member(
                        method,
                        int(tags.get("seed", 0)),
                        softmax(logits.numpy().astype(np.float64)),
                        labels.numpy(),
                        acc,
                    )
                )
    if not groups:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs in experiment(s) {names}")
    for by_method in groups.values():
        for members in by_method.values():
            members.sort(key=lambda m: m.seed)
    return groups


def check_matched(task: str, by_method: dict[str, list[Member]]) -> None:
    """Every method must have the same seeds and the same test set (labels in order)."""
    seeds = {m: [r.seed for r in runs] for m, runs in by_method.items()}
    if len({tuple(s) for s in seeds.values()}) > 1:
        raise AnalysisError(f"{task}: methods have mismatched seeds {seeds}")
    first = next(iter(by_method.values()))[0]
    for method, runs in by_method.items():
        for run in runs:
            if not np.array_equal(run.label, first.label):
                raise AnalysisError(
                    f"{task}: {method} seed {run.seed} was tested on a different test set "
                    f"than {first.method}"
                )


def top_by_val(task: str, by_method: dict[str, list[Member]], k: int) -> list[str]:
    """The k methods with the best mean validation accuracy (registry order breaks ties)."""
    val = {}
    for method, runs in by_method.items():
        known = [r.val_acc for r in runs if r.val_acc is not None]
        if not known:
            raise AnalysisError(
                f"{task}: no validation accuracy for {method} (no study run with "
                "best_val_acc, no val/acc on its final runs); top-k needs it, never test"
            )
        val[method] = float(np.mean(known))
    order = sorted(val, key=lambda m: (-val[m], _rank(m)))
    return order[:k]


def _rank(method: str) -> tuple[int, str]:
    return (REGISTRY.index(method) if method in REGISTRY else len(REGISTRY), method)


def ensemble_accuracy(
    by_method: dict[str, list[Member]], members: list[str], combine: Combiner, kind: str
) -> np.ndarray:
    """Per-example accuracy of an ensemble: seed-matched method ensembles averaged over
    seeds, or (``kind == "seeds"``) one ensemble of the single member's seeds."""
    if kind == "seeds":
        runs = by_method[members[0]]
        return (combine([r.probs for r in runs]) == runs[0].label).astype(np.float64)
    n_seeds = len(by_method[members[0]])
    correct = []
    for s in range(n_seeds):
        runs = [by_method[m][s] for m in members]
        correct.append(combine([r.probs for r in runs]) == runs[0].label)
    return per_example_accuracy(correct)


def group_rows(key: GroupKey, by_method: dict[str, list[Member]], k: int) -> list[dict]:
    """Every ensemble of one (task, backbone, protocol) against its best single method."""
    task = key[0]
    check_matched(task, by_method)
    methods_ = sorted(by_method, key=_rank)
    single = {m: per_example_accuracy([r.probs.argmax(1) == r.label for r in by_method[m]])
              for m in methods_}  # fmt: skip
    best = max(methods_, key=lambda m: (single[m].mean(), -_rank(m)[0]))
    n_seeds = len(by_method[best])
    plans: list[tuple[str, list[str]]] = []
    if len(methods_) >= 2:
        plans.append(("all", methods_))
        if 2 <= k < len(methods_):
            plans.append((f"top{k}", top_by_val(task, by_method, k)))
    if n_seeds >= 2:
        plans += [("seeds", [m]) for m in methods_]
    rows = []
    for kind, members in plans:
        for name, combine in COMBINERS.items():
            acc = ensemble_accuracy(by_method, members, combine, kind)
            ties = bootstrap_ties({"ensemble": acc, "single": single[best]})
            gain = float(acc.mean() - single[best].mean())
            tied = all(bool(t["tied"]) for t in ties.values())
            rows.append(
                {
                    "task": task,
                    "backbone": key[1],
                    "protocol": key[2],
                    "kind": kind,
                    "combiner": name,
                    "members": ",".join(members),
                    "seeds": n_seeds,
                    "acc": float(acc.mean()),
                    "best_single": best,
                    "best_single_acc": float(single[best].mean()),
                    "gain": gain,
                    "tied": tied,
                    "better": gain > 0 and not tied,
                }
            )
    return rows


def ensemble_table(groups: dict[GroupKey, dict[str, list[Member]]], k: int) -> pd.DataFrame:
    rows = [row for key, by_method in groups.items() for row in group_rows(key, by_method, k)]
    if not rows:
        raise AnalysisError("no task has final runs of two methods or two seeds to ensemble")
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per ensemble kind and combiner, mean over tasks; for ``seeds`` only the
    best single method's seed ensemble (the baseline method ensembles must beat)."""
    part = table[(table["kind"] != "seeds") | (table["members"] == table["best_single"])]
    part = part.assign(kind=part["kind"].replace({"seeds": "seeds of best"}))
    grouped = part.groupby(["kind", "combiner"], sort=False)
    return grouped.agg(
        tasks=("task", "count"),
        acc=("acc", "mean"),
        best_single_acc=("best_single_acc", "mean"),
        gain=("gain", "mean"),
        better=("better", "sum"),
        tied=("tied", "sum"),
    ).reset_index()


def bar_chart(table: pd.DataFrame, path: Path) -> Path:
    """Per task: each ensemble's accuracy (both combiners) against the best single method."""
    part = table[(table["kind"] != "seeds") | (table["members"] == table["best_single"])]
    keys = list(dict.fromkeys(zip(part["task"], part["backbone"], part["protocol"], strict=True)))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 0.5, 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        rows = part[(part["task"] == key[0]) & (part["backbone"] == key[1])
                    & (part["protocol"] == key[2])]  # fmt: skip
        kinds = list(dict.fromkeys(rows["kind"]))
        for offset, combiner in ((-0.2, "mean_prob"), (0.2, "vote")):
            values = [rows[(rows["kind"] == k) & (rows["combiner"] == combiner)]["acc"].iloc[0]
                      for k in kinds]  # fmt: skip
            ax.bar(np.arange(len(kinds)) + offset, values, width=0.4, label=combiner)
        best, name = rows["best_single_acc"].iloc[0], rows["best_single"].iloc[0]
        ax.axhline(best, color="k", ls="--", lw=1, label=f"best single ({name})")
        labels = ["seeds of best" if k == "seeds" else k for k in kinds]
        ax.set_xticks(range(len(kinds)), labels, fontsize=7)
        low = min(best, rows["acc"].min())
        ax.set_ylim(max(0.0, low - 0.1), min(1.0, rows["acc"].max() + 0.05))
        ax.set_title(key[0] if len({k[1:] for k in keys}) == 1 else " ".join(key), fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=7)
        ax.legend(fontsize=6, loc="lower right")
    return save_figure(
        fig, path, "ensembles of tuned methods vs the best single method", fontsize=9, dpi=120
    )


def parse_k(options: dict[str, str]) -> int:
    try:
        k = int(options.get("k", "3"))
    except ValueError:
        k = 0
    if k < 2:
        raise AnalysisError(f"option k must be an integer >= 2, got {options.get('k')!r}")
    return k


@analysis("ensemble")
def ensemble(trackers: list[TrackingService], out: Path, options: dict[str, str]) -> Output:
    """Ensembles per task; the summary is the mean over tasks per kind and combiner."""
    k = parse_k(options)
    table = ensemble_table(load_members(trackers), k)
    return Output(
        table,
        [bar_chart(table, out / "ensemble.png")],
        summarise(table),
        f"Ensembles vs the best single method: mean over {table['task'].nunique()} task(s)",
    )
