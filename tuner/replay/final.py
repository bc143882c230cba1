"""A replayed final run, as its Ray task sees it: a recorded test accuracy, looked up.

Kept free of the sweep config and of torch, as ``tuner.replay.trial`` is. A final run is a
Ray task, and the task worker imports the module of the function it runs: through
``tuner.config`` that was the method registry and torch (about 0.7 GB and seconds of CPU per
new worker) to look one number up. At study 000's scale, 304 such workers shared two cores
with the trials. The driver, which has the config, turns what this returns into the
``FinalResult`` it logs (``tuner.replay.engine.ReplayedFinals``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tuner.replay.trial import Source, cached_table, epoch_seconds
from tuner.sweep.ray_internals import node_here


@dataclass(frozen=True)
class ReplayedFinal:
    """What a replayed final run found: the test accuracy, whether the table recorded one
    (else it is the recorded val accuracy), and when and where it ran."""

    test_acc: float
    recorded: bool
    started_at: float
    wall_s: float
    node_id: str


def replay_final_run(
    source: Source,
    task: str,
    method: str,
    config: dict[str, Any],
    epoch_s: float | None,
    epochs: int,
) -> ReplayedFinal:
    """The configuration's recorded ``test_acc`` (its last val accuracy where the table has
    no test column), after spending ``epoch_s`` per final epoch as a retrain would (called
    directly, outside Ray, its node is "")."""
    started = time.time()
    table = cached_table(source)  # read once per worker
    spend = epoch_seconds(table, task, method, config, epoch_s) * epochs
    if spend:
        time.sleep(spend)
    test = table.test_acc(task, method, config)
    recorded = test is not None
    if test is None:
        test = table.curve(task, method, config)[-1]
    return ReplayedFinal(
        test_acc=float(test),
        recorded=recorded,
        started_at=started,
        wall_s=time.time() - started,
        node_id=node_here(),
    )
