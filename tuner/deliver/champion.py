"""The champion of each task: the study with the best *validation* accuracy.

A study run (stage ``tune``, no parent) holds ``best_val_acc``, the final-epoch validation
accuracy of the config it chose; its final runs (stage ``final``, tag ``study``) are that
config retrained on train+val and scored on test once. The champion of a task is the study
with the highest validation accuracy; ties go to fewer trainable parameters, then to the
method registered first (``petl-sweep methods`` order). Test accuracy is carried along to
be shown and tagged, and never read by the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuner import methods
from tuner.deliver import DeliverError
from tuner.tracking.names import PARENT_RUN_TAG
from tuner.util import unknown_message


@dataclass(frozen=True)
class Candidate:
    """One study of a task that reached final runs: what the choice and the listing need."""

    task: str
    method: str
    study: str
    variant: str
    val_acc: float
    trainable_params: int
    #: the final run to ship: the study's first seed
    run_id: str
    test_acc: float
    test_acc_mean: float
    seeds: int
    backbone: str
    protocol: str
    sweep: str
    hp: dict[str, str]


#: Run params that are not the method's own settings.
COMMON = ("lr", "weight_decay", "drop_path", "batch_size", "seed", "epochs")


def _method_rank(method: str) -> int:
    order = methods.list_methods()
    return order.index(method) if method in order else len(order)


def choice_key(c: Candidate) -> tuple[float, int, int, str]:
    """Sort key, best first: validation accuracy, then fewer trainable parameters, then
    registry order (and the study key, so the order is total)."""
    return (-c.val_acc, c.trainable_params, _method_rank(c.method), c.study)


def _newest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r.get("start_time") or 0)


def candidates(
    study_runs: list[dict[str, Any]], final_runs: list[dict[str, Any]]
) -> list[Candidate]:
    """Every finished study with at least one finished final run, from run dicts as
    ``TrackingService.search`` returns them (tags, metrics, params)."""
    studies: dict[str, list[dict[str, Any]]] = {}
    for run in study_runs:
        tags = run["tags"]
        is_study = tags.get("stage") == "tune" and PARENT_RUN_TAG not in tags
        if is_study and tags.get("study") and run.get("status", "FINISHED") == "FINISHED":
            studies.setdefault(tags["study"], []).append(run)
    finals: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for run in final_runs:
        tags = run["tags"]
        if tags.get("stage") != "final" or "test/acc" not in run["metrics"]:
            continue
        seed = int(tags.get("seed", 0))
        finals.setdefault(tags.get("study", ""), {}).setdefault(seed, []).append(run)
    out = []
    for key, runs in sorted(studies.items(), key=lambda kv: _newest(kv[1]).get("start_time") or 0):
        study = _newest(runs)
        val = study["metrics"].get("best_val_acc", study["metrics"].get("val/acc"))
        seeds = finals.get(key)
        if val is None or math.isnan(val) or not seeds:
            continue
        per_seed = [_newest(seeds[s]) for s in sorted(seeds)]
        first, tags = per_seed[0], study["tags"]
        tests = [r["metrics"]["test/acc"] for r in per_seed]
        out.append(
            Candidate(
                task=tags["task"],
                method=tags["method"],
                study=key,
                variant=tags.get("variant", ""),
                val_acc=float(val),
                trainable_params=int(first["metrics"].get("trainable_params", 0)),
                run_id=first["run_id"],
                test_acc=float(tests[0]),
                test_acc_mean=sum(tests) / len(tests),
                seeds=len(tests),
                backbone=tags.get("backbone", ""),
                protocol=tags.get("protocol", ""),
                sweep=tags.get("sweep", ""),
                hp={k: v for k, v in first["params"].items() if k not in COMMON},
            )
        )
    return out


def champions(found: list[Candidate]) -> dict[str, Candidate]:
    """Task → its champion, tasks in first-seen order."""
    best: dict[str, Candidate] = {}
    for c in sorted(found, key=choice_key):
        best.setdefault(c.task, c)
    order = list(dict.fromkeys(c.task for c in found))
    return {t: best[t] for t in order}


def select(
    found: list[Candidate], task: str | None = None, method: str | None = None
) -> list[Candidate]:
    """The champions (one per task), or, with ``method``, that method's study per task;
    ``task`` keeps one task. Unknown names are a ``DeliverError`` listing the valid ones."""
    if not found:
        raise DeliverError("no finished final runs in this experiment: nothing to deliver")
    tasks = list(dict.fromkeys(c.task for c in found))
    if task is not None and task not in tasks:
        raise DeliverError(unknown_message("task", task, tasks, extra=" (tasks with final runs)"))
    if method is not None:
        if method not in methods.list_methods():
            raise DeliverError(unknown_message("method", method, methods.list_methods()))
        pool = [c for c in found if c.method == method]
        if not pool:
            have = sorted({c.method for c in found})
            raise DeliverError(f"method {method!r} has no final runs here; methods: {have}")
        found = pool
    picked = champions(found)
    if task is not None:
        if task not in picked:
            raise DeliverError(f"method {method!r} has no final run on task {task!r}")
        return [picked[task]]
    return list(picked.values())


def total_params(c: Candidate) -> int:
    """Every parameter of ``c``'s model (backbone, head, method), counted on the meta
    device: no weights, no memory. SPT's allocation is a placeholder there, of the same
    budget, so its count is the budgeted one."""
    import torch

    from tuner.backbones import create_backbone
    from tuner.data.tasks import get_task

    # run params are strings; the method's config coerces them ("8" -> 8)
    method = methods.get(c.method, **{k: v for k, v in c.hp.items() if k not in COMMON})
    with torch.device("meta"):
        model = create_backbone(c.backbone, get_task(c.task).num_classes, pretrained=False)
        method.apply(model)
    return sum(p.numel() for p in model.parameters())
