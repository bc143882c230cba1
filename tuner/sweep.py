"""Plan → Ray Tune studies (Optuna TPE + ASHA) → final retrains → leaderboard.

Ray, Optuna and MLflow meet only in the sweep layer: this module, ``tuner.tune_hooks`` (the
searcher and the MLflow trial callback) and ``tuner.final_stage``. Each (task, method) is its own
study with its own equal budget, its own seeded TPE sampler and its own ASHA brackets.
Studies run as Ray tasks, several at once, so the cluster stays busy while a study's last
trial finishes; a study's final retrains start as soon as that study is done.

Two traps are handled in the layer:
* Ray lets a non-random searcher keep one trial pending unless ``max_concurrent_trials``
  is set, so it always is.
* Ray hands a trial that ASHA stopped to Optuna as *complete* with its truncated score, so
  TPE would learn from short runs as if they were final. ``HonestOptunaSearch`` tells
  Optuna such trials were *pruned* (their intermediate values are already reported).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from tuner import methods
from tuner.backbones import resolve_backbone
from tuner.checkpoints import fingerprint as weights_fingerprint
from tuner.config import SweepConfig
from tuner.final_stage import final_hash, log_final, run_final
from tuner.progress import ProgressBoard
from tuner.spaces import Domain, load_space
from tuner.tracking import TrackingService, default_tracking_uri
from tuner.train import Trainer, TrialSpec
from tuner.trainable import study_trainable
from tuner.trial_specs import devices_per_trial, trial_spec
from tuner.tune_hooks import (
    METRIC,
    HonestOptunaSearch,
    MLflowTrialCallback,
    actor_name,
    trial_outcome,
)


def stable_seed(*parts: object) -> int:
    """A seed derived from names, identical across processes (unlike ``hash``)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16)


@dataclass
class StudySpec:
    task: str
    method: str
    seed: int
    space: dict[str, Domain]
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Content hash of everything that determines the study's result (resume key).
    hash: str = ""
    #: Name, digest and split sizes of the task data (logged as an MLflow dataset input).
    dataset: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task}:{self.method}"

    @property
    def dirname(self) -> str:
        return self.key.replace("/", "-").replace(":", "__")


def plan(cfg: SweepConfig) -> list[StudySpec]:
    """One study per (task, method), tasks outermost so early results span methods."""
    return [
        StudySpec(
            task=task,
            method=method,
            seed=stable_seed(cfg.seed, task, method),
            space=load_space(method, cfg.search.space, cfg.search.spaces_dir),
            fixed=dict(cfg.search.fixed.get(method, {})),
        )
        for task in cfg.tasks
        for method in cfg.methods
    ]


def to_ray_space(space: dict[str, Domain], grid: bool) -> dict[str, Any]:
    """Our domains as Ray Tune domains (grid: ``grid_search`` over each value list)."""
    out: dict[str, Any] = {}
    for key, dom in space.items():
        if grid:
            out[key] = tune.grid_search(list(dom.args))
        elif dom.kind == "choice":
            out[key] = tune.choice(list(dom.args))
        elif dom.kind == "loguniform":
            out[key] = tune.loguniform(*dom.args)
        elif dom.kind == "uniform":
            out[key] = tune.uniform(*dom.args)
        elif dom.kind == "int":
            out[key] = tune.randint(dom.args[0], dom.args[1] + 1)
        else:
            out[key] = dom.args[0]
    return out


def select_best(trials: list[dict[str, Any]], max_epochs: int) -> dict[str, Any] | None:
    """Best trial by *final-epoch* val accuracy among trials that ran every epoch.

    Ties: fewer trainable parameters, then the earlier trial. Never reads test metrics.
    """
    finished = [t for t in trials if t["outcome"] == "completed" and t["epochs"] >= max_epochs]
    if not finished:
        return None
    return min(finished, key=lambda t: (-t["val_acc"], t.get("trainable_params", 0), t["index"]))


def run_study(
    cfg: SweepConfig, study: StudySpec, tracker: Any, board: Any, resume: bool = False
) -> dict[str, Any]:
    """One Ray Tune ``Tuner.fit`` for one (task, method): runs inside a Ray task.

    ``resume``: continue the study's interrupted Ray Tune experiment (``Tuner.restore``)
    instead of starting a new one, when its state is in ``storage_path``.
    """
    grid = cfg.search.space == "published_grid"
    tags = {
        "task": study.task,
        "method": study.method,
        "backbone": cfg.backbone,
        "stage": "tune",
        "study": study.key,
        "sweep": cfg.name,
    }
    ray.get(
        tracker.start_run.remote(
            study.key,
            study.key,
            {**tags, "study_hash": study.hash},
            params={
                "search.space": cfg.search.space,
                "search.num_samples": cfg.tune.num_samples,
                "search.seed": study.seed,
                **{f"fixed.{k}": v for k, v in study.fixed.items()},
            },
        )
    )
    tracker.log_dataset.remote(study.key, study.dataset, "tune")
    board.update.remote(study.key, status="tuning")
    param_space = to_ray_space({k: v for k, v in study.space.items() if k not in study.fixed}, grid)
    searcher = (
        None
        if grid
        else HonestOptunaSearch(
            metric=METRIC,
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=study.seed),
            max_epochs=cfg.tune.max_epochs,
        )
    )
    spec = trial_spec(cfg, study.task, study.method, dict(study.fixed), "tune", cfg.seed).to_dict()
    if getattr(methods.method_class(study.method), "needs_sensitivity", False):
        spec["sensitivity_uri"] = study_sensitivity(cfg, spec, tracker, study.key)
    trainable = tune.with_resources(
        study_trainable(spec, cfg.tune.checkpoint_every, f"trial_{cfg.name}__{study.dirname}"),
        {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial},
    )
    run_name = f"{cfg.name}__{study.dirname}"
    experiment = f"{storage_path(cfg).rstrip('/')}/{run_name}"
    if resume and tune.Tuner.can_restore(experiment):
        # Finished trials stay finished; unfinished and errored ones continue from their
        # last checkpoint; the searcher and ASHA come back with their state.
        tuner = tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=param_space,
        )
        ray.get(tracker.set_tags.remote(study.key, {"resumed": "true"}))
        searcher = restored_searcher(tuner, searcher)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    metric=METRIC,
                    mode="max",
                    max_t=cfg.tune.max_epochs,
                    grace_period=cfg.tune.grace_period,
                    reduction_factor=cfg.tune.reduction_factor,
                ),
                num_samples=1 if grid else cfg.tune.num_samples,
                max_concurrent_trials=cfg.tune.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=run_name,
                storage_path=storage_path(cfg),
                callbacks=[
                    MLflowTrialCallback(
                        cfg.name,
                        study.key,
                        study.fixed,
                        tags,
                        cfg.tune.max_epochs,
                        devices_per_trial(cfg),
                    )
                ],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=1),
                verbose=0,
            ),
        )
    started = time.time()
    grid_results = tuner.fit()
    trials = []
    for index, res in enumerate(grid_results):
        last = res.metrics or {}
        trials.append(
            {
                "index": index,
                "trial_id": last.get("trial_id", str(index)),
                "config": {**study.fixed, **(res.config or {})},
                "epochs": int(last.get("training_iteration", 0)),
                "val_acc": float(last.get(METRIC, 0.0)),
                "trainable_params": int(last.get("trainable_params", 0)),
                "outcome": "error" if res.error else trial_outcome(last, cfg.tune.max_epochs),
            }
        )
    if resume:
        ray.get(tracker.end_lost_trials.remote(study.key, {t["trial_id"] for t in trials}))
    best = select_best(trials, cfg.tune.max_epochs)
    summary = {
        "study": study.key,
        "task": study.task,
        "method": study.method,
        "trials": trials,
        "best": best,
        "wall_s": time.time() - started,
        "optuna_states": searcher.trial_states() if searcher else {},
        "study_hash": study.hash,
        "sensitivity_uri": spec.get("sensitivity_uri"),
    }
    counts = {
        o: sum(t["outcome"] == o for t in trials)
        for o in ("completed", "stopped_early", "diverged", "error")
    }
    ray.get(
        tracker.log_metrics.remote(
            study.key,
            {
                **{f"trials_{k}": v for k, v in counts.items()},
                "best_val_acc": best["val_acc"] if best else float("nan"),
                "tune_wall_s": summary["wall_s"],
            },
            0,
        )
    )
    end_tags = {
        "best_trial": best["trial_id"] if best else "none",
        **{f"optuna.{k}": v for k, v in summary["optuna_states"].items()},
    }
    if best:
        ray.get(tracker.log_params.remote(study.key, {"best": best["config"]}))
    ray.get(tracker.log_dict.remote(study.key, summary, "summary.json"))
    ray.get(tracker.end_run.remote(study.key, "FINISHED" if best else "FAILED", end_tags))
    board.update.remote(study.key, status="final" if best else "no result")
    return summary


def _sensitivity_pass(spec: dict[str, Any]) -> tuple[str, str, bytes]:
    """Build the study's first trial (which computes and caches the scores); return the
    cache key, where the scores came from, and the file's bytes (for MLflow)."""
    from tuner.sensitivity import cache_path

    trainer = Trainer(TrialSpec(**spec))
    path = cache_path(Path(spec["data_root"]) / ".cache", trainer.sensitivity_key)
    return trainer.sensitivity_key, trainer.sensitivity_source, path.read_bytes()


def study_sensitivity(cfg: SweepConfig, spec: dict[str, Any], tracker: Any, key: str) -> str:
    """SPT: compute the study's sensitivity once, before any trial, on a trial-sized slot.

    The scores are logged to the study run under ``sensitivity/``; the returned artifact URI
    lets a trial on a node without the cache file fetch them instead of recomputing.
    """
    task = ray.remote(max_retries=1)(_sensitivity_pass).options(
        num_cpus=cfg.resources.cpus_per_trial, num_gpus=cfg.resources.gpus_per_trial
    )
    cache_key, source, data = ray.get(task.remote(spec))
    filename = f"{cache_key}.safetensors"
    ray.get(tracker.log_artifact_bytes.remote(key, filename, data, "sensitivity"))
    ray.get(tracker.log_params.remote(key, {"sensitivity.key": cache_key}))
    ray.get(tracker.set_tags.remote(key, {"sensitivity.source": source}))
    return ray.get(tracker.artifact_uri.remote(key, f"sensitivity/{filename}"))


def restored_searcher(tuner: Any, fallback: Any) -> Any:
    """The searcher a restored Tuner carries (its Optuna study holds every earlier trial).

    Ray keeps it in the Tuner's tune config and may wrap it in a concurrency limiter; if
    that layout ever changes, the fresh searcher is returned (its state counts are empty).
    """
    local = getattr(tuner, "_local_tuner", None)
    alg = getattr(getattr(local, "_tune_config", None), "search_alg", None)
    alg = getattr(alg, "searcher", alg)
    return alg if isinstance(alg, HonestOptunaSearch) else fallback


def storage_path(cfg: SweepConfig) -> str:
    return cfg.ray.storage_path or str((Path(cfg.out_dir) / "ray_results").resolve())


def tracking_uri(cfg: SweepConfig) -> str:
    return cfg.tracking.uri or default_tracking_uri(cfg.out_dir)


def artifact_root(cfg: SweepConfig) -> str | None:
    """Artifacts beside the SQLite store by default; a server decides for itself."""
    if cfg.tracking.uri:
        return None
    return (Path(cfg.out_dir).resolve() / "mlartifacts" / cfg.experiment).as_uri()


def _init_ray(cfg: SweepConfig) -> None:
    if ray.is_initialized():
        return
    # Inside a Ray job (``ray job submit`` / RayJob) RAY_ADDRESS names the cluster to join.
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, log_to_driver=False)


def concurrent_studies(cfg: SweepConfig) -> int:
    """Enough studies to fill every trial slot, plus one to cover a study's tail."""
    if cfg.resources.max_concurrent_studies:
        return cfg.resources.max_concurrent_studies
    cpus = ray.cluster_resources().get("CPU", 1)
    slots = max(1, int(cpus // cfg.resources.cpus_per_trial))
    return max(1, math.ceil(slots / cfg.tune.max_concurrent_trials)) + 1


def prepare_data(cfg: SweepConfig) -> dict[str, dict[str, Any]]:
    """Write missing synthetic tasks and decode every task once, before trials race for it.

    Returns each task's dataset record (name, digest of its split files, split sizes).
    """
    from tuner.backbones import create_backbone, data_config
    from tuner.data import load_task
    from tuner.data.sources import task_digest
    from tuner.data.tasks import task_dir

    norm = data_config(create_backbone(cfg.backbone, 2, pretrained=False))
    size, interpolation = norm["input_size"][-1], norm["interpolation"]
    records = {}
    for task in cfg.tasks:
        # same size and filter as the trials' load_task, so they hit this decode cache
        data = load_task(task, Path(cfg.data_root), size, synth_seed=0, interpolation=interpolation)
        folder = task_dir(task, Path(cfg.data_root))
        records[task] = {
            "name": task,
            "digest": task_digest(task, Path(cfg.data_root)),
            "source": str(folder.resolve()),
            "splits": {
                "train800": len(data.train[1]),
                "val200": len(data.val[1]),
                "train800val200": len(data.trainval[1]),
                "test": len(data.test[1]),
            },
            "image_size": size,
        }
    return records


def study_hash(cfg: SweepConfig, study: StudySpec) -> str:
    """Everything that determines a study's outcome; equal hash = reusable result."""
    content = {
        "task": study.task,
        "method": study.method,
        "dataset": study.dataset.get("digest"),
        "backbone": resolve_backbone(cfg.backbone),
        "seed": cfg.seed,
        "study_seed": study.seed,
        "tune": cfg.tune.model_dump(),
        "train": cfg.train.model_dump(),
        "space": cfg.search.space,
        "domains": {k: [d.kind, list(d.args)] for k, d in sorted(study.space.items())},
        "fixed": study.fixed,
    }
    if cfg.backbone_weights:  # the file's content, not its name, decides the result
        content["backbone_weights"] = weights_fingerprint(cfg.backbone_weights)
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[
        :20
    ]


def finished_study(tracker: Any, study: StudySpec, resume: bool = False) -> dict[str, Any] | None:
    """The summary of an identical study already finished in MLflow, if any."""
    runs = ray.get(tracker.find.remote({"study_hash": study.hash, "stage": "tune"}))
    parents = [r for r in runs if "mlflow.parentRunId" not in r["tags"]]
    if not parents:
        if not resume:  # a resumed study continues its RUNNING runs instead
            ray.get(tracker.mark_stale.remote({"study_hash": study.hash}))
        return None
    return ray.get(tracker.load_dict.remote(parents[0]["run_id"], "summary.json"))


def run_sweep(
    cfg: SweepConfig,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run every study and its final retrains; returns study summaries and final results.

    Resumable: a study or final run whose content hash already finished in MLflow is not
    run again, so a crashed sweep restarts where it stopped.
    """
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    datasets = prepare_data(cfg)
    _init_ray(cfg)
    studies = plan(cfg)
    for study in studies:
        study.dataset = datasets[study.task]
        study.hash = study_hash(cfg, study)
    tracker = (
        ray.remote(num_cpus=0)(TrackingService)
        .options(name=actor_name(cfg.name, "tracker"))
        .remote(tracking_uri(cfg), cfg.experiment, artifact_root(cfg), resume=resume)
    )
    board = (
        ray.remote(num_cpus=0)(ProgressBoard)
        .options(name=actor_name(cfg.name, "board"))
        .remote([s.key for s in studies], cfg.tune.num_samples)
    )
    study_task = ray.remote(num_cpus=0, max_retries=0)(run_study)
    final_task = ray.remote(max_retries=1)(run_final).options(
        num_cpus=cfg.resources.cpus_per_trial, num_gpus=cfg.resources.gpus_per_trial
    )
    running: dict[Any, StudySpec] = {}
    finals: dict[Any, tuple[str, str]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    final_results: list[dict[str, Any]] = []
    reused = {"studies": 0, "finals": 0}
    limit = concurrent_studies(cfg)
    started = time.time()

    def study_done(summary: dict[str, Any], cached: bool) -> None:
        summaries[summary["study"]] = summary
        if not summary["best"]:
            board.update.remote(summary["study"], status="no result")
            return
        for i in range(cfg.final.seeds):
            key = final_hash(cfg, summary, i)
            if ray.get(tracker.find.remote({"final_hash": key})):
                reused["finals"] += 1
                continue
            finals[final_task.remote(cfg, summary, i)] = (summary["study"], key)
        pending = any(study == summary["study"] for study, _ in finals.values())
        if cached and summary["best"]:
            board.trial_result.remote(summary["study"], summary["best"]["val_acc"])
        board.update.remote(
            summary["study"], status=("cached" if cached else "final") if pending else "done"
        )

    queue = []
    for study in studies:
        cached = finished_study(tracker, study, resume)
        if cached is None:
            queue.append(study)
        else:
            reused["studies"] += 1
            study_done(cached, cached=True)
    while queue or running or finals:
        while queue and len(running) < limit:
            study = queue.pop(0)
            running[study_task.remote(cfg, study, tracker, board, resume)] = study
        ready, _ = ray.wait(list(running) + list(finals), num_returns=1, timeout=0.5)
        for ref in ready:
            if ref in running:
                running.pop(ref)
                study_done(ray.get(ref), cached=False)
                continue
            study_key, key = finals.pop(ref)
            result = ray.get(ref)
            result["final_hash"] = key
            log_final(cfg, tracker, result, datasets[result["spec"]["task"]])
            final_results.append(result)
            seeds = [r["test/acc"] for r in final_results if r["study"] == study_key]
            left = any(study == study_key for study, _ in finals.values())
            board.update.remote(
                study_key, final=sum(seeds) / len(seeds), status="final" if left else "done"
            )
        if on_tick is not None:
            on_tick(ray.get(board.snapshot.remote()))
    if on_tick is not None:
        on_tick(ray.get(board.snapshot.remote()))
    return {
        "studies": summaries,
        "finals": final_results,
        "reused": reused,
        "tracker": tracker,
        "wall_s": time.time() - started,
    }
