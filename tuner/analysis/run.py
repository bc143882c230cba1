"""Run one analysis kind against MLflow and log its outputs as an ``analysis`` run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tuner.analysis.agreement import agreement_table, heatmaps
from tuner.analysis.predictions import final_predictions
from tuner.tracking.client import TrackingService
from tuner.util import unknown_message


def _agreement(trackers: list[TrackingService], out: Path) -> tuple[pd.DataFrame, list[Path]]:
    table = agreement_table(final_predictions(trackers))
    return table, [heatmaps(table, out / "agreement.png")]


#: kind → (trackers, output folder) → (table, plots)
KINDS: dict[str, Callable[[list[TrackingService], Path], tuple[pd.DataFrame, list[Path]]]] = {
    "agreement": _agreement,
}


def run_analysis(
    kind: str, tracking_uri: str, experiments: list[str], out: Path
) -> tuple[pd.DataFrame, list[Path], str]:
    """The analysis table, its files (parquet first) and the MLflow run id it was logged to
    (in the first experiment)."""
    if kind not in KINDS:
        raise ValueError(unknown_message("analysis", kind, list(KINDS)))
    trackers = [TrackingService(tracking_uri, e, create=False) for e in experiments]
    out.mkdir(parents=True, exist_ok=True)
    table, plots = KINDS[kind](trackers, out)
    parquet = out / f"{kind}.parquet"
    table.to_parquet(parquet, index=False)
    files = [parquet, *plots]
    key = f"analysis/{kind}"
    tracker = trackers[0]
    run_id = tracker.start_run(
        key, f"analysis {kind}", {"stage": "analysis", "analysis": kind},
        params={"experiments": ",".join(experiments)},
    )  # fmt: skip
    for path in files:
        tracker.log_artifact(key, path, "analysis")
    tracker.end_run(key)
    return table, files, run_id
