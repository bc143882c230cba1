"""``petl-sweep plan``: what a sweep will do and cost, before anything runs.

It resolves the config (preset and file), builds the study plan the sweep would build, and
reports the protocol in the words of the studies (epochs, warm-up, floor, drop path,
normalisation, weight-decay policy, early stopping) with the work it implies: trials per
study (a published grid's size, or ``num_samples``), trial-epochs at most and as ASHA is
expected to spend them, and device-hours for a given time per epoch. Nothing is trained,
no data is read, no Ray starts.
"""

from __future__ import annotations

from typing import Any

from tuner.config import SweepConfig
from tuner.sweep.plan import plan
from tuner.sweep.spaces import grid_points


def asha_epochs(trials: int, max_t: int, grace: int, eta: int) -> float:
    """Expected trial-epochs of successive halving: every trial reaches the first rung, a
    fraction 1/eta of them each next rung, the survivors run to ``max_t``. ASHA promotes
    asynchronously but keeps the same fractions, so this is its budget up to stragglers."""
    rungs = []
    t = grace
    while t < max_t:
        rungs.append(t)
        t *= eta
    if not rungs:
        return float(trials * max_t)
    epochs, done = 0.0, 0
    for k, rung in enumerate([*rungs, max_t]):
        epochs += trials * eta ** (-k) * (rung - done)
        done = rung
    return epochs


def describe_plan(cfg: SweepConfig, epoch_seconds: float | None = None) -> dict[str, Any]:
    """The resolved plan as one JSON-able mapping (see the module docstring)."""
    studies = plan(cfg)
    grid = cfg.grid_search
    tune, train = cfg.tune, cfg.train
    rows, max_epochs, expected = [], 0, 0.0
    for study in studies:
        space = {k: d for k, d in study.space.items() if k not in study.fixed}
        trials = len(grid_points(space)) if grid else tune.num_samples
        most = trials * tune.max_epochs
        likely = (
            asha_epochs(trials, tune.max_epochs, tune.grace_period, tune.reduction_factor)
            if tune.early_stopping
            else float(most)
        )
        max_epochs += most
        expected += likely
        rows.append(
            {
                "study": study.key,
                "trials": trials,
                "trial_epochs_max": most,
                "trial_epochs_expected": round(likely, 1),
                "space": {k: [d.kind, list(d.args)] for k, d in space.items()},
                "fixed": study.fixed,
            }
        )
    finals = len(studies) * cfg.final.seeds * cfg.final_epochs
    out: dict[str, Any] = {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "tasks": len(cfg.tasks),
        "methods": cfg.methods,
        "studies": len(studies),
        "search": {"space": cfg.search.space, "num_samples": tune.num_samples},
        "protocol": {
            "epochs": tune.max_epochs,
            "batch_size": train.batch_size,
            "optimizer": "AdamW",
            "lr_schedule": train.lr_schedule,
            "warmup_epochs": train.warmup_epochs,
            "warmup_lr_init": train.warmup_lr_init,
            "lr_min": train.lr_min,
            "drop_path": train.drop_path,
            "normalize": train.normalize,
            "weight_decay_on": train.weight_decay_on,
            "early_stopping": (
                {
                    "scheduler": "ASHA",
                    "grace_period": tune.grace_period,
                    "reduction_factor": tune.reduction_factor,
                }
                if tune.early_stopping
                else False
            ),
            "final": {"seeds": cfg.final.seeds, "epochs": cfg.final_epochs},
        },
        "trial_epochs": {
            "tune_max": max_epochs,
            "tune_expected": round(expected, 1),
            "final": finals,
        },
        "per_study": rows,
    }
    if epoch_seconds is not None:
        devices = cfg.devices_per_trial
        hours = (expected + finals) * epoch_seconds * devices / 3600
        out["device_hours"] = {
            "epoch_seconds": epoch_seconds,
            "devices_per_trial": devices,
            "expected": round(hours, 2),
            "max": round((max_epochs + finals) * epoch_seconds * devices / 3600, 2),
        }
    return out
