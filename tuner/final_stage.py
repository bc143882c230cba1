"""The final stage: retrain a study's best config on train+val, evaluate test once, log it.

A final run is a Ray task (any node); its result comes back to the driver, which logs
params, per-epoch metrics, ``test/acc`` (and shift sets), and the artifacts later analyses
need (trainable-only weights, per-example test logits, config, environment and, for SPT, the
allocation table and plot) through the tracker actor, which holds the only MLflow client.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import ray

from tuner.allocation_report import allocation_bytes, allocation_png
from tuner.allocation_report import summary as allocation_summary
from tuner.artifacts import environment_info, predictions_bytes, trainable_bytes
from tuner.config import SweepConfig
from tuner.train import train_one
from tuner.trial_specs import devices_per_trial, trial_spec
from tuner.tune_hooks import LOGGED


def run_final(cfg: SweepConfig, study: dict[str, Any], seed_index: int) -> dict[str, Any]:
    """Retrain the study's best config on train800val200 and report test accuracy."""
    best = study["best"]
    spec = trial_spec(
        cfg, study["task"], study["method"], best["config"], "final", cfg.seed + 1000 + seed_index
    )
    spec.sensitivity_uri = study.get("sensitivity_uri")
    started = time.time()
    result = train_one(spec)
    result.update(
        spec=spec.to_dict(),
        study=study["study"],
        seed_index=seed_index,
        wall_s=time.time() - started,
        environment=environment_info(),
        node_id=ray.get_runtime_context().get_node_id(),
    )
    return result


def final_hash(cfg: SweepConfig, summary: dict[str, Any], seed_index: int) -> str:
    shifts = cfg.shifts.get(summary["task"], {})
    content = [summary["study_hash"], summary["best"]["config"], cfg.final_epochs, seed_index]
    content += [shifts] if shifts else []
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def log_final(
    cfg: SweepConfig, tracker: Any, result: dict[str, Any], dataset: dict[str, Any]
) -> None:
    """A final run: params, per-epoch training metrics, test/acc once, and artifacts."""
    spec = result["spec"]
    key = f"final/{result['study']}/{result['seed_index']}"
    tags = {
        "task": spec["task"],
        "method": spec["method"],
        "backbone": cfg.backbone,
        "stage": "final",
        "study": result["study"],
        "sweep": cfg.name,
        "seed": spec["seed"],
        "device": result["environment"]["device"],
        "git_sha": result["environment"]["git_sha"],
        "final_hash": result["final_hash"],
        "node": result.get("node_id", ""),
    }
    name = f"final {result['study']} seed{result['seed_index']}"
    ray.get(
        tracker.start_run.remote(
            key,
            name,
            tags,
            params={
                **spec["hp"],
                "seed": spec["seed"],
                "epochs": spec["epochs"],
                "batch_size": spec["batch_size"],
            },
        )
    )
    tracker.log_dataset.remote(key, dataset, "final")
    for epoch in result["history"]:
        step = int(epoch["epoch"])
        logged = {k: v for k, v in epoch.items() if k in LOGGED and k != "test/acc"}
        tracker.log_metrics.remote(key, logged, step)
    tracker.log_metrics.remote(
        key,
        {
            "test/acc": result["test/acc"],
            "trainable_params": result["trainable_params"],
            "trainable_params_without_head": result["trainable_params_without_head"],
            "wall_s": result["wall_s"],
            "peak_memory_mb": result["peak_memory_mb"],
            **{k: v for k, v in result.items() if k.startswith("shift/")},
            "device_hours": result["wall_s"] * devices_per_trial(cfg) / 3600,
        },
        int(spec["epochs"]),
    )
    logits, labels = result["predictions"]
    tracker.log_artifact_bytes.remote(
        key, "test_predictions.parquet", predictions_bytes(logits, labels)
    )
    tracker.log_artifact_bytes.remote(
        key,
        "trainable.safetensors",
        trainable_bytes(
            result["trainable_state"],
            {
                "method": spec["method"],
                "hp": spec["hp"],
                "backbone": spec["backbone"],
                "task": spec["task"],
            },
        ),
    )
    tracker.log_dict.remote(key, {k: v for k, v in spec.items()}, "config.json")
    if result.get("allocation"):
        rows = result["allocation"]
        title = f"{spec['method']} on {spec['task']}"
        tracker.log_artifact_bytes.remote(key, "allocation.parquet", allocation_bytes(rows))
        tracker.log_artifact_bytes.remote(key, "allocation.png", allocation_png(rows, title))
        tracker.log_metrics.remote(key, allocation_summary(rows), int(spec["epochs"]))
    tracker.log_dict.remote(key, result["environment"], "environment.json")
    ray.get(tracker.end_run.remote(key, "FINISHED", {"outcome": "completed"}))
