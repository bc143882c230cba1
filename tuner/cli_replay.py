"""``petl-sweep replay``: compare tuning strategies on recorded results, at no training cost.

The table is a file (CSV or parquet), a shipped name (``petl_vision_vtab1k``) or a finished
sweep's MLflow experiment (``--experiment``). Every strategy tunes every study again with the
project's own TPE searcher and ASHA scheduler, over ``--seeds`` seeds; ``tuner.cli``
registers the command on the app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuner.cli_base import console, fail


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (every study when count covers them)."""
    if count <= 0 or count >= len(items):
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _fmt(entry: dict, key: str, digits: int = 2) -> str:
    value, ci = entry.get(key), entry.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def replay(
    table: Annotated[
        str | None, typer.Argument(help="CSV/parquet path or a shipped table (petl_vision_vtab1k)")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="a finished sweep's MLflow experiment instead of a file")
    ] = None,
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI (with --experiment)")
    ] = "sqlite:///results/mlflow.db",
    seeds: Annotated[int, typer.Option(min=1, help="search seeds per strategy")] = 20,
    eps: Annotated[
        float, typer.Option(min=0.0, help="a hit: within eps of the grid's best")
    ] = 0.01,
    preset: Annotated[
        str, typer.Option(help="whose search 'default' replays")
    ] = "petl_vision_vtab1k_tpe_asha",
    strategies: Annotated[
        str | None, typer.Option(help="comma-separated subset, e.g. grid,tpe,default")
    ] = None,
    studies: Annotated[
        int, typer.Option(help="only this many studies, evenly spread (0: all)")
    ] = 0,
    quick: Annotated[bool, typer.Option(help="16 studies, 3 seeds: a smoke run")] = False,
    jobs: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="regret PNG path")] = Path(
        "results/replay/regret.png"
    ),
) -> None:
    """Replay tuning strategies on a table: configurations and trial-epochs to a near-best."""
    from tuner.replay.plot import regret_figure
    from tuner.replay.runner import compare
    from tuner.replay.strategies import preset_strategy, standard
    from tuner.replay.summary import summarise
    from tuner.replay.table import TableError, from_experiment, load_table

    if (table is None) == (experiment is None):
        fail("give a TABLE or --experiment NAME (one of them)")
    try:
        data = from_experiment(experiment, tracking_uri) if experiment else load_table(table)
        default, asha = preset_strategy(preset)
    except (TableError, ValueError, KeyError, FileNotFoundError) as err:
        fail(str(err))
    chosen = standard(default, data.has_curves)
    if strategies:
        wanted = [s.strip() for s in strategies.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.name for s in chosen})
        if unknown:
            fail(f"unknown strategies {unknown}; known: {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in wanted]
    if quick:
        studies, seeds = studies or 16, min(seeds, 3)
    picked = _spread(data.studies(), studies)
    comparison = compare(data, chosen, seeds, eps, asha, picked, jobs)
    summary = summarise(comparison)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        summary["plot"] = str(regret_figure(comparison, plot))
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    out = Table(title=f"{data.describe()}; {len(picked)} studies, {seeds} seeds, eps {eps}")
    figures = ("ratio_vs_grid", "hit_rate", "trial_epochs_ratio", "paid_epochs_ratio",
               "test_tie_rate")  # fmt: skip
    for column in ("strategy", *figures[:-1], "test ties"):
        out.add_column(column)
    for name, entry in summary["strategies"].items():
        out.add_row(name, *(_fmt(entry, f) for f in figures))
    console.print(out)
    if plot is not None:
        console.print(f"regret figure: {plot}")
