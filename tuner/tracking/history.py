"""A finished sweep's trials, read back from MLflow as replay-table rows.

Each trial run of a sweep (``stage=tune`` with a ``trial_id`` tag) holds its configuration as
params and its ``val/acc`` per epoch as a metric history; these become one row per epoch
(``task``, ``method``, ``config``, ``epoch``, ``val_acc``, and ``test_acc`` / ``epoch_s``
where the trial logged ``test/acc`` / ``epoch_time_s``). Only trials that ran every epoch of
the study's longest trial are kept: a trial ASHA stopped has no final value to replay. A
configuration tried twice (TPE may repeat one) keeps its first run.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow import MlflowClient

TRIAL_FILTER = "tags.stage = 'tune' and attributes.status = 'FINISHED'"


def _history(client: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    return {int(m.step): float(m.value) for m in client.get_metric_history(run_id, metric)}


def trial_rows(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Per-epoch rows of every finished trial of ``experiment``, oldest trial first."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            TRIAL_FILTER,
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        runs.extend(r for r in page if r.data.tags.get("trial_id"))
        token = page.token
        if not token:
            break
    trials: list[tuple[str, str, str, dict[str, str], dict[int, float], dict, dict]] = []
    for run in runs:
        val = _history(client, run.info.run_id, "val/acc")
        if not val:
            continue
        tags = run.data.tags
        config = json.dumps(dict(sorted(run.data.params.items())))
        test = _history(client, run.info.run_id, "test/acc")
        secs = _history(client, run.info.run_id, "epoch_time_s")
        trials.append(
            (tags.get("task", ""), tags.get("method", ""), config, run.data.params, val, test, secs)
        )
    longest: dict[tuple[str, str], int] = {}
    for task, method, _, _, val, _, _ in trials:
        longest[(task, method)] = max(longest.get((task, method), 0), max(val))
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for task, method, config, _, val, test, secs in trials:
        if max(val) < longest[(task, method)] or (task, method, config) in seen:
            continue
        seen.add((task, method, config))
        for epoch in sorted(val):
            row = {
                "task": task,
                "method": method,
                "config": config,
                "epoch": epoch,
                "val_acc": val[epoch],
            }
            if epoch in test:
                row["test_acc"] = test[epoch]
            if epoch in secs:
                row["epoch_s"] = secs[epoch]
            rows.append(row)
    return rows
