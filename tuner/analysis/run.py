"""The ``analyze`` frame: a registry of kinds, and one way to run and log any of them.

A kind is a function ``(trackers, out, options) -> Output`` registered with ``@analysis``
in any module of ``tuner.analysis`` (every module is imported, so a new kind is available
the moment its file exists). ``run_analysis`` computes everything *before* it opens the
MLflow run, so bad input (``AnalysisError``) leaves nothing half-written.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tuner.tracking.client import TrackingService
from tuner.util import unknown_message


class AnalysisError(ValueError):
    """The experiment's records do not allow this analysis (what is missing, in one line)."""


@dataclass
class Output:
    """What a kind produced: the full ``table`` (parquet), ``plots`` (PNG paths) and the
    ``summary`` the console prints and the leaderboard page shows under ``title``."""

    table: pd.DataFrame
    plots: list[Path]
    summary: pd.DataFrame
    title: str
    #: extra files logged beside the table (e.g. a second parquet)
    extra: list[Path] = field(default_factory=list)


Kind = Callable[[list[TrackingService], Path, dict[str, str]], Output]
KINDS: dict[str, Kind] = {}


def analysis(name: str) -> Callable[[Kind], Kind]:
    """Register a kind under ``name`` (``petl-sweep analyze NAME``)."""

    def register(fn: Kind) -> Kind:
        KINDS[name] = fn
        return fn

    return register


def load_kinds() -> dict[str, Kind]:
    """Import every module of ``tuner.analysis`` once so its kinds register themselves."""
    import tuner.analysis as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return KINDS


def trackers_for(tracking_uri: str, experiments: list[str]) -> list[TrackingService]:
    """One read-only tracker per experiment; a missing experiment is an ``AnalysisError``."""
    try:
        return [TrackingService(tracking_uri, e, create=False) for e in experiments]
    except (ValueError, LookupError) as err:
        raise AnalysisError(str(err)) from err


def log_output(
    kind: str, output: Output, tracker: TrackingService, experiments: list[str], out: Path
) -> tuple[list[Path], str]:
    """Write the table and summary as parquet and log them with the plots as an
    ``analysis`` run (tags ``stage=analysis``, ``analysis=KIND``); returns files, run id."""
    parquet = out / f"{kind}.parquet"
    output.table.to_parquet(parquet, index=False)
    summary = out / f"{kind}.summary.parquet"
    output.summary.to_parquet(summary, index=False)
    files = [parquet, summary, *output.extra, *output.plots]
    key = f"analysis/{kind}"
    run_id = tracker.start_run(
        key, f"analysis {kind}", {"stage": "analysis", "analysis": kind, "title": output.title},
        params={"experiments": ",".join(experiments)},
    )  # fmt: skip
    for path in files:
        tracker.log_artifact(key, path, "analysis")
    tracker.end_run(key)
    return files, run_id


def run_analysis(
    kind: str,
    tracking_uri: str,
    experiments: list[str],
    out: Path,
    options: dict[str, str] | None = None,
) -> tuple[Output, list[Path], str]:
    """Compute one kind and log it to the first experiment: (output, files, run id)."""
    kinds = load_kinds()
    if kind not in kinds:
        raise AnalysisError(unknown_message("analysis", kind, sorted(kinds)))
    trackers = trackers_for(tracking_uri, experiments)
    out.mkdir(parents=True, exist_ok=True)
    output = kinds[kind](trackers, out, dict(options or {}))
    files, run_id = log_output(kind, output, trackers[0], experiments, out)
    return output, files, run_id


def run_all(
    tracking_uri: str, experiments: list[str], out: Path, options: dict[str, str] | None = None
) -> tuple[dict[str, Output], dict[str, str]]:
    """Every kind the records allow: (outputs by kind, skipped kind → why)."""
    done: dict[str, Output] = {}
    skipped: dict[str, str] = {}
    for kind in sorted(load_kinds()):
        try:
            done[kind] = run_analysis(kind, tracking_uri, experiments, out, options)[0]
        except AnalysisError as err:
            skipped[kind] = str(err)
    return done, skipped
