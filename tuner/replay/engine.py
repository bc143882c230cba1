"""Replay as a sweep backend: a table's recorded results stand in for training.

``petl-sweep run --replay TABLE`` is the real engine (one Ray Tune run, the searchers, ASHA,
the trial logger, the tracker actor, MLflow, the final stage, the leaderboard) with three
parts swapped, each consulted in one place of the sweep layer when ``cfg.replay`` is set:

* ``replay_plan`` (``tuner.sweep.plan.plan``): the studies are the sweep's (task, method)
  pairs, each one of the table's; a study's space is the table's values per key (choice
  domains) and its grid is the table's configurations in table order, not a product. The
  names are labels: no registry, no data, no backbone. Anything the table cannot replay is
  a ``ReplayError`` before anything starts.
* ``replay_trainable`` (``tuner.sweep.shared_run``): a trial reports its configuration's
  recorded curve one epoch at a time (``tuner.replay.trial``: a final-only row reports its
  value at every epoch), spends ``epoch_s`` per epoch, checkpoints by the sweep's
  ``CheckpointPolicy`` (the epoch reached, so ``--resume`` continues) and parks on the
  sweep's stop request like a training trial.
* ``ReplayedFinals`` (``tuner.sweep.final.final_stage``): a final run is the chosen
  configuration's recorded ``test_acc`` (its recorded val accuracy where the table has no
  test column, flagged by ``replay/test_recorded`` = 0); no weights and no predictions.

Why: a sweep's cost beyond training (scheduling, tracking, MLflow, the leaderboard) can be
measured at the study's full size on a laptop, and a strategy can be dry-run before paying
for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tuner.config import SweepConfig
from tuner.records import FinalResult, StudySummary
from tuner.replay.final import ReplayedFinal, replay_final_run
from tuner.replay.settings import ReplaySettings
from tuner.replay.table import ReplayTable
from tuner.replay.trial import Source, cached_table, make_trainable
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.final import FinalStage, final_seed
from tuner.sweep.plan import StudySpec, stable_seed
from tuner.sweep.recorded import RecordedTrial
from tuner.sweep.spaces import Domain
from tuner.sweep.specs import trial_spec
from tuner.tracking.artifacts import environment_info
from tuner.util import content_hash


class ReplayError(ValueError):
    """A sweep the table cannot replay: names the table, the study and what is missing."""


def source_of(replay: ReplaySettings) -> Source:
    return (replay.table, replay.experiment, replay.tracking_uri)


def replay_table(replay: ReplaySettings) -> ReplayTable:
    """The table of a replay, read once per process (a changed file is read again)."""
    return cached_table(source_of(replay))


def table_of(cfg: SweepConfig) -> ReplayTable:
    assert cfg.replay is not None, "not a replay sweep"
    return replay_table(cfg.replay)


# -- the plan -------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Config values as a table and a sweep file spell them: 8 == 8.0 == "8"."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _space(points: list[dict[str, Any]], order: dict[str, list[Any]]) -> dict[str, Domain]:
    """Each key's values among ``points``, in the table's sorted order, as a choice domain."""
    space = {}
    for key, values in order.items():
        used = [v for v in values if any(key in p and _same(p[key], v) for p in points)]
        if used:
            space[key] = Domain("choice", tuple(used))
    return space


def replay_study(cfg: SweepConfig, table: ReplayTable, task: str, method: str) -> StudySpec:
    """One study: the table's configurations of (task, method) that match the sweep's
    ``search.fixed`` for the method, their values as the space, their order as the grid."""
    fixed = dict(cfg.search.fixed.get(method, {}))
    every = table.configs(task, method)
    points = [c for c in every if all(k in c and _same(c[k], v) for k, v in fixed.items())]
    where = f"{table.source}: ({task}, {method})"
    if not points:
        raise ReplayError(
            f"{where} has no configuration with search.fixed.{method} = {fixed} "
            f"(its {len(every)} configurations: e.g. {every[0]})"
        )
    space = _space(points, table.values(task, method))
    grid = [{k: v for k, v in p.items() if k not in fixed} for p in points]
    product = math.prod(len(d.args) for k, d in space.items() if k not in fixed)
    if not cfg.grid_search and product != len(grid):
        raise ReplayError(
            f"{where}: its {len(grid)} configurations are not every combination of its values "
            f"({product}), so TPE would propose configurations the table never recorded; "
            "replay it as a grid (search.space: published_grid or search.sampler: grid)"
        )
    digest = content_hash([table.source, task, method, [
        [p, table.curve(task, method, p), table.test_acc(task, method, p)] for p in points
    ]], 16)  # fmt: skip
    return StudySpec(
        task=task,
        method=method,
        seed=stable_seed(cfg.seed, task, method),
        space=space,
        fixed=fixed,
        dataset={
            "name": task,
            "digest": digest,
            "source": f"replay:{table.source}",
            "splits": {"configurations": len(points)},
        },
        points=grid,
    )


def replay_plan(cfg: SweepConfig) -> list[StudySpec]:
    """Every (task, method) of the sweep, tasks outermost; each must be one of the table's."""
    table = table_of(cfg)
    recorded = set(table.studies())
    wanted = [(t, m) for t in cfg.tasks for m in cfg.methods]
    missing = [f"({t}, {m})" for t, m in wanted if (t, m) not in recorded]
    if missing:
        raise ReplayError(
            f"{table.source} has no recording of {len(missing)} of the sweep's "
            f"{len(wanted)} studies: {', '.join(missing[:5])}"
            + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        )
    return [replay_study(cfg, table, task, method) for task, method in wanted]


def replay_datasets(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Each task's dataset record: the table it is replayed from (no data is read)."""
    table = table_of(cfg)
    return {
        task: {"name": task, "digest": content_hash([table.source, task], 16),
               "source": f"replay:{table.source}", "splits": {}}
        for task in cfg.tasks
    }  # fmt: skip


# -- the trials -----------------------------------------------------------------------------
def replay_trainable(
    cfg: SweepConfig,
    studies: dict[str, StudySpec],
    policy: CheckpointPolicy,
    name: str,
    recorded: dict[str, RecordedTrial] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """The sweep's trainable in a replay (``tuner.replay.trial``: no config, no torch);
    ``recorded``: the trials a resumed sweep replays from MLflow (``tuner.sweep.recorded``)."""
    assert cfg.replay is not None
    plain = {key: (s.task, s.method, dict(s.fixed)) for key, s in studies.items()}
    return make_trainable(source_of(cfg.replay), plain, cfg.tune.max_epochs,
                          cfg.replay.epoch_s, policy, cfg.name, name, recorded)  # fmt: skip


# -- the final stage ------------------------------------------------------------------------
class ReplayedFinals(FinalStage):
    """``run_final``'s replay twin: the chosen configuration's recorded ``test_acc``, looked
    up in a torch-free Ray task (``tuner.replay.final``); the driver builds the result."""

    def __init__(self, cfg: SweepConfig) -> None:
        table_of(cfg)  # fails here, in the driver, if the table cannot be read
        super().__init__(cfg, replay_final_run)
        self.environment = {**environment_info(), "device": "replay"}

    def submit(self, summary: StudySummary, seed_index: int) -> Any:
        assert summary.best is not None, f"study {summary.study} has no result to replay"
        assert self.cfg.replay is not None
        source, epoch_s = source_of(self.cfg.replay), self.cfg.replay.epoch_s
        return self.task.remote(source, summary.task, summary.method, summary.best.config,
                                epoch_s, self.cfg.final_epochs)  # fmt: skip

    def result(self, value: ReplayedFinal, summary: StudySummary, seed_index: int) -> FinalResult:
        assert summary.best is not None
        spec = trial_spec(self.cfg, summary.task, summary.method, summary.best.config,
                          "final", final_seed(self.cfg, seed_index))  # fmt: skip
        return FinalResult(
            study=summary.study,
            seed_index=seed_index,
            spec=spec,
            history=[],
            test_acc=value.test_acc,
            trainable_params=0,
            trainable_params_without_head=0,
            peak_memory_mb=0.0,
            wall_s=value.wall_s,
            started_at=value.started_at,
            environment=self.environment,
            node_id=value.node_id,
            predictions=None,
            trainable_state={},
            report_metrics={"replay/test_recorded": float(value.recorded)},
        )
