"""The final stage: retrain a study's best config on train+val, evaluate test once, log it.

A final run is a Ray task (any node); its ``FinalResult`` comes back to the driver, which
logs params, per-epoch metrics, ``test/acc`` (and shift sets), and the artifacts later
analyses need (trainable-only weights, per-example test logits, config, environment, and
whatever the method reports) through the tracker actor, which holds the only MLflow client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray

from tuner.config import SweepConfig
from tuner.records import LOGGED, FinalResult, StudySummary, time_totals, variant_tag
from tuner.sweep.ray_internals import node_here
from tuner.sweep.specs import trial_spec
from tuner.sweep.study import protocol_hash, replay_tag
from tuner.tracking.artifacts import environment_info, predictions_bytes, trainable_bytes
from tuner.tracking.client import fetch_artifact
from tuner.training.trainer import train_one
from tuner.util import content_hash


def final_seed(cfg: SweepConfig, seed_index: int) -> int:
    """The seed of a study's ``seed_index``-th final run (apart from every tuning seed)."""
    return cfg.seed + 1000 + seed_index


def run_final(cfg: SweepConfig, study: StudySummary, seed_index: int) -> FinalResult:
    """Retrain the study's best config on train800val200 and report test accuracy."""
    assert study.best is not None, f"study {study.study} has no result to retrain"
    spec = trial_spec(
        cfg,
        study.task,
        study.method,
        study.best.config,
        "final",
        final_seed(cfg, seed_index),
        prepared_uri=study.prepared_uri,
    )
    started = time.time()
    result = train_one(spec, fetch=fetch_artifact)
    report = result.get("report")
    return FinalResult(
        study=study.study,
        seed_index=seed_index,
        spec=spec,
        history=result["history"],
        test_acc=float(result["test/acc"]),
        trainable_params=int(result["trainable_params"]),
        trainable_params_without_head=int(result["trainable_params_without_head"]),
        peak_memory_mb=float(result["peak_memory_mb"]),
        wall_s=time.time() - started,
        started_at=started,
        environment=environment_info(),
        node_id=node_here(),
        predictions=result["predictions"],
        trainable_state=result["trainable_state"],
        shift_acc={k: v for k, v in result.items() if k.startswith("shift/")},
        report_files=dict(report.files) if report else {},
        report_metrics=dict(report.metrics) if report else {},
    )


def final_hash(cfg: SweepConfig, summary: StudySummary, seed_index: int) -> str:
    """Everything that decides a final run's result: equal hash = reusable run."""
    assert summary.best is not None
    shifts = cfg.shifts.get(summary.task, {})
    content: list[Any] = [summary.study_hash, summary.best.config, cfg.final_epochs, seed_index]
    content += [shifts] if shifts else []
    return content_hash(content, 20)


def log_final(cfg: SweepConfig, tracker: Any, result: FinalResult, dataset: dict) -> None:
    """A final run: params, per-epoch training metrics, test/acc once, and artifacts."""
    spec = result.spec
    key = f"final/{result.study}/{result.seed_index}"
    tags = {
        "task": spec.task,
        "method": spec.method,
        "backbone": cfg.backbone,
        "protocol": protocol_hash(cfg),
        "stage": "final",
        "study": result.study,
        "sweep": cfg.name,
        "seed": spec.seed,
        "device": result.environment["device"],
        "git_sha": result.environment["git_sha"],
        "final_hash": result.final_hash,
        "node": result.node_id,
        **variant_tag(cfg.search.fixed.get(spec.method, {})),
        **replay_tag(cfg),
    }
    name = f"final {result.study} seed{result.seed_index}"
    params = {
        **spec.hp,
        "seed": spec.seed,
        "epochs": spec.epochs,
        "batch_size": spec.train.batch_size,
    }
    # Logged after the retrain, so backdated: MLflow's duration is the retrain's wall time.
    ray.get(tracker.start_run.remote(key, name, tags, params=params, start_time=result.started_at))
    tracker.log_dataset.remote(key, dataset, "final")
    for epoch in result.history:
        logged = {k: v for k, v in epoch.items() if k in LOGGED and k != "test/acc"}
        tracker.log_metrics.remote(key, logged, int(epoch["epoch"]))
    tracker.log_metrics.remote(
        key,
        {
            "test/acc": result.test_acc,
            "trainable_params": result.trainable_params,
            "trainable_params_without_head": result.trainable_params_without_head,
            "wall_s": result.wall_s,
            "peak_memory_mb": result.peak_memory_mb,
            **result.shift_acc,
            **result.report_metrics,
            "device_hours": result.wall_s * cfg.devices_per_trial / 3600,
            **time_totals(result.history),
        },
        spec.epochs,
    )
    if result.predictions is not None:  # a replayed final has no test predictions
        logits, labels = result.predictions
        tracker.log_artifact_bytes.remote(
            key, "test_predictions.parquet", predictions_bytes(logits, labels)
        )
    if result.trainable_state:  # ... nor weights
        meta = {"method": spec.method, "hp": spec.hp, "backbone": spec.backbone, "task": spec.task}
        tracker.log_artifact_bytes.remote(
            key, "trainable.safetensors", trainable_bytes(result.trainable_state, meta)
        )
    tracker.log_dict.remote(key, spec.to_dict(), "config.json")
    for filename, data in result.report_files.items():
        tracker.log_artifact_bytes.remote(key, filename, data)
    tracker.log_dict.remote(key, result.environment, "environment.json")
    end = result.started_at + result.wall_s
    ray.get(tracker.end_run.remote(key, "FINISHED", {"outcome": "completed"}, end_time=end))


class FinalStage:
    """How the driver gets a study's final runs: ``submit`` starts one as a Ray task (any
    node, the sweep's per-trial resources) and ``result`` turns what the task returned into
    the ``FinalResult`` the driver logs. Here the task retrains (``run_final``) and returns
    the result itself; a replay's stage (``tuner.replay.engine.ReplayedFinals``) looks a
    number up in a torch-free task and builds the result on the driver."""

    def __init__(self, cfg: SweepConfig, function: Callable[..., Any] = run_final) -> None:
        self.cfg = cfg
        self.task = ray.remote(max_retries=1)(function).options(
            num_cpus=cfg.resources.cpus_per_trial, num_gpus=cfg.resources.gpus_per_trial
        )

    def submit(self, summary: StudySummary, seed_index: int) -> Any:
        return self.task.remote(self.cfg, summary, seed_index)

    def result(self, value: Any, summary: StudySummary, seed_index: int) -> FinalResult:
        return value


def final_stage(cfg: SweepConfig) -> FinalStage:
    """The retrain of a study's best config, or its recorded test accuracy in a replay."""
    if cfg.replay:
        from tuner.replay.engine import ReplayedFinals

        return ReplayedFinals(cfg)
    return FinalStage(cfg)
