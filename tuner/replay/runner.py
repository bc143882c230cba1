"""Run every strategy over every study and seed of a table, on one or several processes.

A unit of work is one (strategy, seed) over all studies; units are independent, so they run
in a process pool (``jobs``) with the table sent once per worker. TPE dominates the cost:
its suggestion time grows with the trials a study has seen.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from tuner.replay.compare import Asha, Strategy, StudyRun, run_study, warm_first
from tuner.replay.table import ReplayTable

_TABLE: ReplayTable | None = None


@dataclass
class Comparison:
    """Runs by strategy name, then seed, then study (in ``studies`` order)."""

    table: ReplayTable
    studies: list[tuple[str, str]]
    strategies: list[Strategy]
    seeds: list[int]
    eps: float
    max_epochs: int
    runs: dict[str, list[list[StudyRun]]]
    horizon: int = 20


def _init(table: ReplayTable) -> None:
    global _TABLE
    _TABLE = table
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _unit(
    args: tuple[Strategy, int, list, float, int, Asha | None, bool, list, int],
) -> list[StudyRun]:
    strategy, seed, studies, eps, max_epochs, asha, full, firsts, horizon = args
    assert _TABLE is not None
    return [
        run_study(
            _TABLE,
            task,
            method,
            strategy,
            seed * 100_003 + i,
            eps,
            max_epochs,
            asha,
            full,
            first,
            horizon,
        )
        for i, ((task, method), first) in enumerate(zip(studies, firsts, strict=True))
    ]


def compare(
    table: ReplayTable,
    strategies: list[Strategy],
    seeds: int = 20,
    eps: float = 0.01,
    asha: Asha | None = None,
    studies: list[tuple[str, str]] | None = None,
    jobs: int = 1,
    full: bool | None = None,
    horizon: int = 20,
) -> Comparison:
    """Every strategy × seed × study. ``full`` (default: where the table has test accuracy)
    runs each study's whole budget, for the chosen configuration's test accuracy; otherwise a
    run stops at its hit or after ``horizon`` trials, whichever is later."""
    studies = studies or table.studies()
    max_epochs = max(len(table.curve(t, m, c)) for t, m in studies for c in table.configs(t, m))
    full = table.has_test if full is None else full
    units: list[tuple[Any, ...]] = []
    for strategy in strategies:
        firsts = [warm_first(table, t, m, strategy, eps) for t, m in studies]
        for seed in range(seeds):
            units.append((strategy, seed, studies, eps, max_epochs, asha, full, firsts, horizon))
    if jobs > 1:
        with ProcessPoolExecutor(jobs, initializer=_init, initargs=(table,)) as pool:
            results = list(pool.map(_unit, units))
    else:
        _init(table)
        results = [_unit(u) for u in units]
    runs: dict[str, list[list[StudyRun]]] = {s.name: [] for s in strategies}
    for unit, result in zip(units, results, strict=True):
        runs[unit[0].name].append(result)
    return Comparison(
        table, studies, strategies, list(range(seeds)), eps, max_epochs, runs, horizon
    )
