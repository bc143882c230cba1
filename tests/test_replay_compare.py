"""Strategy replay on planted tables whose best configurations are known: the project's TPE
and ASHA driven through the calls Ray Tune makes, the figures, the CLI's JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.replay.compare import Asha, Strategy
from tuner.replay.runner import compare
from tuner.replay.summary import regret_curves, summarise
from tuner.replay.table import from_records

TASKS = ("t1", "t2", "t3")
GRID = [{"lr": lr, "wd": wd} for lr in (1, 2, 3) for wd in (0, 1)]  # 6 points, table order
PLANTED = {"lr": 2, "wd": 1}  # index 3 of GRID


def planted_rows(epochs: int = 0) -> list[dict]:
    """Method ``a``: PLANTED is best (0.9) on every task. Method ``b``: each task's best is a
    different point, so another task's best is never this task's."""
    rows = []
    for t, task in enumerate(TASKS):
        for method in ("a", "b"):
            best = 3 if method == "a" else t
            for i, config in enumerate(GRID):
                final = 0.9 if i == best else 0.3 + 0.05 * i
                for e in range(1, epochs + 1) if epochs else [None]:
                    row = {"task": task, "method": method, "config": json.dumps(config),
                           "val_acc": final if e is None else final * e / epochs}  # fmt: skip
                    if e is not None:
                        row["epoch"] = e
                    rows.append(row)
    return rows


@pytest.fixture(scope="module")
def planted():
    return from_records(planted_rows(), "planted")


def test_every_strategy_finds_the_planted_best(planted) -> None:
    strategies = [
        Strategy("grid", "grid"),
        Strategy("random", "random"),
        Strategy("tpe", "tpe", budget=16),
        Strategy("warm", "tpe", warm="best", warm_top=3, budget=16),
        Strategy("prior", "tpe", warm="prior", warm_top=2, budget=16),
    ]
    result = compare(planted, strategies, seeds=2, full=True)
    summary = summarise(result)["strategies"]
    assert summary["grid"]["ratio_vs_grid"] == 1.0
    assert summary["grid"]["budget_ratio_vs_grid"] == 1.0
    for name in summary:
        assert summary[name]["hit_rate"] == 1.0, name
        for runs in result.runs[name]:
            for (task, method), run in zip(result.studies, runs, strict=True):
                best = PLANTED if method == "a" else GRID[TASKS.index(task)]
                assert run.chosen == best, (name, task, method)
    # the grid reaches the planted best at its 4th point, then runs the rest of the grid
    grid_run = result.runs["grid"][0][0]
    assert grid_run.configs == 6 and grid_run.incumbents[:4] == [0.3, 0.35, 0.4, 0.9]
    assert summary["random"]["ratio_vs_grid"] > 1.0


def test_hit_rates_where_the_warm_start_misleads(planted) -> None:
    """One trial per study, warm-started from the other tasks' best: method a's is right
    (hit), method b's is another task's best (miss). Hit rate 1/2, 36 / 6 = 6x."""
    for rule in ("best", "prior"):
        one = Strategy("one", "tpe", warm=rule, warm_top=1, budget=1)
        result = compare(planted, [one], seeds=2)
        entry = summarise(result)["strategies"]["one"]
        assert entry["hit_rate"] == 0.5 and entry["ratio_vs_grid"] == 6.0, rule
        assert [r.hit for r in result.runs["one"][0]] == [True, False] * 3
        regret = regret_curves(result, "one", 3)
        # a studies: regret 0; b studies: another task's best is this task's worst (regret 1)
        # under the engine's rule (ties in best val acc: table order), a poor point under the
        # prior's; the run stopped after its one trial, so the incumbent holds
        assert regret.shape == (2, 3) and (regret == regret[0, 0]).all()
        assert regret[0, 0] == 0.5 if rule == "best" else 0.25 < regret[0, 0] <= 0.5


def test_asha_saves_trial_epochs_on_curves() -> None:
    table = from_records(planted_rows(epochs=4), "curves")
    asha = Asha(grace_period=1, reduction_factor=2)
    strategies = [Strategy("grid", "grid"), Strategy("grid+asha", "grid", asha=True)]
    result = compare(table, strategies, seeds=1, asha=asha)
    summary = summarise(result)["strategies"]
    assert result.max_epochs == 4
    assert summary["grid"]["trial_epochs_ratio"] == 1.0
    assert summary["grid+asha"]["hit_rate"] == 1.0  # the best leads at every rung
    assert summary["grid+asha"]["trial_epochs_ratio"] > 1.0  # ASHA stopped some trials
    assert summary["grid+asha"]["ratio_vs_grid"] == 1.0  # same configurations, fewer epochs


def test_cli_json_and_png(tmp_path: Path) -> None:
    path = tmp_path / "planted.csv"
    pd.DataFrame(planted_rows()).to_csv(path, index=False)
    png = tmp_path / "regret.png"
    result = CliRunner().invoke(
        app, ["replay", str(path), "--json", "--seeds", "2", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["eps"] == 0.01 and doc["studies"] == 6 and doc["seeds"] == 2
    assert set(doc["strategies"]) == {"grid", "random", "tpe", "warm", "default"}
    for entry in doc["strategies"].values():
        assert {"ratio_vs_grid", "hit_rate", "trial_epochs_ratio"} <= set(entry)
        low, high = entry["ratio_vs_grid_ci"]
        assert low <= entry["ratio_vs_grid"] <= high
        assert entry["trial_epochs_ratio"] is None  # final values only
    default = doc["strategies"]["default"]  # the petl_vision_vtab1k_tpe_asha preset's search
    assert default["budget"] == 20 and default["warm"] == "prior:20"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_needs_one_source() -> None:
    result = CliRunner().invoke(app, ["replay"])
    assert result.exit_code == 2 and "TABLE or --experiment" in result.output


def tie_table(with_correct: bool):
    """Two configurations per task, A best on val; B's test answers are A's with 3 % of the
    examples turned wrong: a 3-point gap on 100 test images (t100) and on 2,000 (t2000)."""
    import numpy as np

    rows = []
    for task, n in (("t100", 100), ("t2000", 2000)):
        a = np.arange(n) % 5 < 3  # 60 % right
        b = a.copy()
        b[np.flatnonzero(a)[: n * 3 // 100]] = False
        for name, val, right in (("A", 0.9, a), ("B", 0.8, b)):
            for epoch in (1, 2):
                row = {"task": task, "method": "m", "config": json.dumps({"c": name}),
                       "epoch": epoch, "val_acc": val * epoch / 2,
                       "test_acc": float(right.mean())}  # fmt: skip
                if with_correct and epoch == 2:
                    row["test_correct"] = "".join("1" if r else "0" for r in right)
                rows.append(row)
    return from_records(rows, "ties")


def test_test_ties_by_paired_bootstrap_and_paid_epochs() -> None:
    """A choice 3 points below the grid's on test: within eps it never ties; the paired
    bootstrap ties it on 100 test images (3 discordant answers) but not on 2,000 (60)."""
    from tuner.replay.compare import StudyRun
    from tuner.replay.runner import Comparison
    from tuner.replay.summary import per_seed

    for with_correct, expected in ((True, 0.5), (False, 0.0)):
        table = tie_table(with_correct)
        chosen = {"c": "B"}
        runs = [
            StudyRun(configs=1, epochs=2, trials=2, trial_epochs=3, budget=2, chosen=chosen),
            StudyRun(configs=2, epochs=4, trials=2, trial_epochs=4, budget=2, chosen=chosen),
        ]
        strategy = Strategy("b", "tpe", budget=2, asha=True)
        comparison = Comparison(table, table.studies(), [strategy], [0], 0.01, 2, {"b": [runs]})
        figures = per_seed(comparison, "b")
        assert figures["test_tie_rate"] == [expected], with_correct
        assert figures["paid_epochs_ratio"] == [8 / 7]  # 2 studies x 2 configs x 2 epochs
        assert figures["trial_epochs_ratio"] == [8 / 6]
        entry = summarise(comparison)["strategies"]["b"]
        assert entry["paid_epochs_ratio"] == 8 / 7 and entry["test_tie_rate"] == expected
