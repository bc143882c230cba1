"""A real sweep's MLflow work per study does not grow with the sweep (issue 22).

Two replay sweeps through the whole engine, of 10 and of 40 one-configuration studies,
count every call the sweep makes to its tracker actor (the only MLflow client): each write
operation is the same number of calls per study in both, and the reads (searches) are the
same few in both, so no study and no trial event costs a query over the whole experiment.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import ray

from tuner.config import parse_config
from tuner.sweep.events import actor_name
from tuner.sweep.orchestrate import run_sweep

METHODS = [f"m{j}" for j in range(10)]
#: studies in the small and the large sweep (tasks × the 10 methods)
SMALL, LARGE = 10, 40  # 200 takes ~25 min on 2 cores; the searcher's count test has 200
TASKS = [f"t{i:02d}" for i in range(LARGE // len(METHODS))]
READS = ("find", "search", "load_dict", "artifact_uri", "run_id")


def sweep_calls(root, name: str, table, tasks: list[str]) -> dict[str, int]:
    """Every tracker call of one replay sweep, by operation (read at its last tick)."""
    cfg = parse_config({
        "name": name, "tasks": tasks, "methods": METHODS, "out_dir": str(root / "results"),
        "replay": {"table": str(table)}, "search": {"space": "published_grid"},
        "tune": {"max_epochs": 2, "grace_period": 1, "max_concurrent_trials": 1},
        "final": {"seeds": 1}, "ray": {"num_cpus": 2},
    })  # fmt: skip
    seen: dict[str, int] = {}

    def tick(_: dict) -> None:
        tracker = ray.get_actor(actor_name(name, "tracker"))
        seen.update(ray.get(tracker.call_counts.remote()))

    result = run_sweep(cfg, on_tick=tick)
    assert not result.failed and len(result.finals) == len(tasks) * len(METHODS)
    return seen


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_scale")
    rows = [{"task": t, "method": m, "config": json.dumps({"lr": 0.01}),
             "val_acc": 0.5 + 0.01 * j, "test_acc": 0.4}
            for t in TASKS for j, m in enumerate(METHODS)]  # fmt: skip
    table = root / "many.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    try:
        small = sweep_calls(root, "small", table, TASKS[: SMALL // len(METHODS)])
        large = sweep_calls(root, "large", table, TASKS)
    finally:
        ray.shutdown()
    return small, large


def test_writes_per_study_are_the_same_in_a_small_and_a_large_sweep(counts):
    small, large = counts
    writes = sorted(op for op in {*small, *large} if op not in READS)
    assert {"start_run", "ensure_run", "log_metrics", "end_run"} <= set(writes)
    assert {op: small.get(op, 0) / SMALL for op in writes} == {
        op: large.get(op, 0) / LARGE for op in writes
    }


def test_reads_do_not_grow_with_the_sweep(counts):
    small, large = counts
    reads = {op: large.get(op, 0) for op in READS}
    assert reads == {op: small.get(op, 0) for op in READS}
    assert sum(reads.values()) <= 5, reads  # the re-run check's searches, once per sweep
