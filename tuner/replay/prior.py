"""Warm-start points from a table's *other* tasks (leave-one-task-out).

Two rules, both blind to the study's own task:

* ``best_of_other_tasks``: the engine's warm start (``tuner.sweep.warm_start.warm_points``)
  fed with what a sweep's MLflow would hold, one finished study per other task whose chosen
  configuration is its best; it ranks those studies by their best val accuracy.
* ``prior_points``: each configuration of the method ranked by the share of other tasks on
  which it came within ``eps`` of that task's best (ties: mean normalised accuracy, then table
  order), less *twins*: a configuration whose final val accuracy equals an earlier point's on
  every other task (on two or more) adds no evidence, so a budget is not spent on it (the
  VTAB-1k table has none among any study's first 24 points; the synth grids' two weight
  decays often are). On the VTAB-1k grids this order finds a near-best configuration sooner
  than the engine's rule, which favours the easiest tasks' choices (see bench/RESULTS.md). A
  sweep with ``search.prior: TABLE`` asks ``sweep_prior`` for these points when a study opens.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from tuner.records import METRIC
from tuner.replay.table import ReplayTable, config_key, load_table
from tuner.sweep.spaces import Domain
from tuner.sweep.warm_start import coerce, warm_points


def choice_space(values: dict[str, list[Any]]) -> dict[str, Domain]:
    """A study's table values as choice domains (what the replayed searcher searches)."""
    return {k: Domain("choice", tuple(v)) for k, v in values.items()}


def _best(table: ReplayTable, task: str, method: str) -> tuple[dict[str, Any], float]:
    configs = table.configs(task, method)
    finals = [table.final(task, method, c) for c in configs]
    top = max(range(len(configs)), key=lambda i: (finals[i], -i))
    return configs[top], finals[top]


def best_of_other_tasks(
    table: ReplayTable, task: str, method: str, space: dict[str, Domain], top: int
) -> list[dict[str, Any]]:
    """The engine's warm-start points for (task, method) from the table's other tasks."""
    studies = []
    for other, m in table.studies():
        if m != method or other == task:
            continue
        config, acc = _best(table, other, m)
        studies.append(
            {
                "tags": {"task": other},
                "metrics": {METRIC: acc},
                "params": {f"best.{k}": str(v) for k, v in config.items()},
            }
        )
    return [p for p, _ in warm_points(studies, task, space, top)]


def prior_points(
    table: ReplayTable,
    method: str,
    exclude_task: str | None,
    space: dict[str, Domain],
    top: int,
    eps: float = 0.01,
    fill: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Up to ``top`` configurations of ``method`` in the prior's order (see the module doc),
    each expressed in ``space``'s values (keys outside ``space`` dropped); a configuration
    that lacks a key of ``space`` (after ``fill``: values for keys the table never varied,
    such as the sweep's fixed drop path) or has a value outside its domain is skipped."""
    score: dict[str, list[float]] = {}
    first: dict[str, dict[str, Any]] = {}
    evidence: dict[str, list[tuple[str, float]]] = {}  # (task, final val) of each config
    for task, m in table.studies():
        if m != method or task == exclude_task:
            continue
        configs = table.configs(task, m)
        finals = [table.final(task, m, c) for c in configs]
        best, worst = max(finals), min(finals)
        for config, acc in zip(configs, finals, strict=True):
            key = config_key(config)
            first.setdefault(key, config)
            near = float(acc >= best - eps - 1e-9)
            norm = (acc - worst) / (best - worst) if best > worst else 1.0
            tally = score.setdefault(key, [0.0, 0.0, 0.0])
            tally[0], tally[1], tally[2] = tally[0] + near, tally[1] + norm, tally[2] + 1
            evidence.setdefault(key, []).append((task, acc))
    order = sorted(score, key=lambda k: (-score[k][0] / score[k][2], -score[k][1] / score[k][2]))
    points: list[dict[str, Any]] = []
    tried: set[tuple[tuple[str, float], ...]] = set()
    for key in order:
        config = {**(fill or {}), **first[key]}
        if not set(space) <= set(config):
            continue
        fitted = {k: coerce(str(config[k]), space[k]) for k in space}
        if any(v is None for v in fitted.values()) or fitted in points:
            continue
        # a twin (the very same result on every other task: a setting that changed nothing,
        # like a weight decay too small to move a prediction) says nothing new: skip it
        if len(evidence[key]) > 1 and tuple(evidence[key]) in tried:
            continue
        tried.add(tuple(evidence[key]))
        points.append(fitted)
        if len(points) == top:
            break
    return points


@functools.lru_cache(maxsize=4)
def _table(name_or_path: str) -> ReplayTable:
    return load_table(name_or_path)


def method_defaults(method: str) -> dict[str, Any]:
    """A registered method's hyper-parameter defaults ({} for a method not registered)."""
    from tuner import methods

    try:
        return dict(methods.method_class(method).defaults())
    except (KeyError, ValueError):
        return {}


def with_prior(
    cfg: Any, task: str, method: str, space: dict[str, Domain], warm: list[tuple[dict, str]]
) -> list[tuple[dict[str, Any], str]]:
    """A sweep study's warm points with ``search.prior``'s first, as (configuration,
    ``prior:<table>``); ``warm`` (the engine's warm start) follows, less repeats.

    Leave-one-task-out as in the replay: the study's own task never contributes. A method
    the table does not hold gets no prior points. Keys the space searches and the table
    never varied take what a grid run would have used: the sweep's fixed drop path, else
    the method's default (VPT's prompt_dropout)."""
    search = cfg.search
    loaded = _table(search.prior)
    if all(m != method for _, m in loaded.studies()):
        return warm
    fill = method_defaults(method)
    if cfg.train.drop_path is not None:
        fill["drop_path"] = cfg.train.drop_path
    found = prior_points(loaded, method, task, space, search.prior_top, search.prior_eps, fill)
    source = f"prior:{Path(search.prior).stem}"
    return [(p, source) for p in found] + [w for w in warm if w[0] not in found]
