"""One study: a Ray Tune ``Tuner`` for one (task, method), with TPE and ASHA.

Each (task, method) is its own study with its own equal budget, its own seeded TPE sampler
and its own ASHA brackets. ``run_study`` runs inside a Ray task on the driver's node; its
``StudySummary`` goes back to the orchestrator. Two traps are handled here:

* Ray lets a non-random searcher keep one trial pending unless ``max_concurrent_trials``
  is set, so it always is.
* A method with a ``prepare`` pass (SPT's sensitivity) gets it once per study, before any
  trial, on a trial-sized slot; every trial and final run then reuses its artifact.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tuner import methods
from tuner.backbones import resolve_backbone
from tuner.config import SweepConfig
from tuner.records import METRIC, StudySummary, TrialRecord, first_line, trial_outcome, variant_tag
from tuner.sweep.callbacks import MLflowTrialCallback
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.plan import StudySpec
from tuner.sweep.searcher import restored_searcher, tpe_searcher
from tuner.sweep.spaces import Domain
from tuner.sweep.specs import trial_spec
from tuner.sweep.trainable import study_trainable
from tuner.sweep.warm_start import warm_points
from tuner.training.spec import TrialSpec
from tuner.util import content_hash


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


def select_best(trials: list[TrialRecord], max_epochs: int) -> TrialRecord | None:
    """Best trial by *final-epoch* val accuracy among trials that ran every epoch.

    Ties: fewer trainable parameters, then the earlier trial. Never reads test metrics.
    """
    finished = [t for t in trials if t.outcome == "completed" and t.epochs >= max_epochs]
    if not finished:
        return None
    return min(finished, key=lambda t: (-t.val_acc, t.trainable_params, t.index))


def no_result_reason(trials: list[TrialRecord]) -> str:
    """Why no trial could be chosen: the first trial error, else how trials ended."""
    errors = [t.error for t in trials if t.error]
    if errors:
        return f"every trial failed ({len(errors)} errors), first: {errors[0]}"
    counts = {o: sum(t.outcome == o for t in trials) for o in {t.outcome for t in trials}}
    ended = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no trials"
    return f"no trial ran every epoch ({ended})"


def protocol_hash(cfg: SweepConfig) -> str:
    """The sweep's training protocol as 8 hex digits (the ``protocol`` tag of its runs).

    The leaderboard never averages runs of different protocols, even when several
    experiments are merged. Unlike ``study_hash`` it leaves out task, method and data, so
    every run of one sweep shares it: backbone, weights file, tuning budget, training and
    final settings, search space kind."""
    budget = ("num_samples", "max_epochs", "grace_period", "reduction_factor", "early_stopping")
    weights = cfg.backbone_weights
    content = {
        "backbone": resolve_backbone(cfg.backbone),
        "weights": weights.rstrip("/").rsplit("/", 1)[-1] if weights else None,
        "tune": {k: v for k, v in cfg.tune.model_dump().items() if k in budget},
        "train": cfg.train.model_dump(),
        "final_epochs": cfg.final_epochs,
        "space": cfg.search.space,
    }
    return content_hash(content, 8)


def study_tags(cfg: SweepConfig, study: StudySpec) -> dict[str, str]:
    return {
        "task": study.task,
        "method": study.method,
        "backbone": cfg.backbone,
        "protocol": protocol_hash(cfg),
        "stage": "tune",
        "study": study.key,
        "sweep": cfg.name,
        **variant_tag(study.fixed),
    }


def _prepare_pass(spec: TrialSpec) -> tuple[str, str, str, bytes]:
    """Build the study's first trial (whose method prepares and caches its pass); return
    the pass's kind, key, source and file bytes (for MLflow)."""
    from tuner.training.trainer import Trainer

    prepared = Trainer(spec).prepared
    assert prepared is not None and prepared.path, f"{spec.method}: prepare left no file"
    data = Path(prepared.path).read_bytes()
    return prepared.kind, prepared.key, prepared.source, data


def prepare_study(cfg: SweepConfig, spec: TrialSpec, tracker: Any, key: str) -> str:
    """Run the method's prepare pass once for the study; returns its artifact URI, which
    lets a trial on a node without the cache file fetch it instead of recomputing."""
    task = ray.remote(max_retries=1)(_prepare_pass).options(
        num_cpus=cfg.resources.cpus_per_trial, num_gpus=cfg.resources.gpus_per_trial
    )
    kind, cache_key, source, data = ray.get(task.remote(spec))
    filename = f"{cache_key}.safetensors"
    ray.get(tracker.log_artifact_bytes.remote(key, filename, data, kind))
    ray.get(tracker.log_params.remote(key, {f"{kind}.key": cache_key}))
    ray.get(tracker.set_tags.remote(key, {f"{kind}.source": source}))
    return ray.get(tracker.artifact_uri.remote(key, f"{kind}/{filename}"))


def _new_tuner(
    cfg: SweepConfig,
    study: StudySpec,
    trainable: Any,
    space: dict,
    searcher: Any,
    warm: list[tuple[dict[str, Any], str]] | None = None,
) -> tune.Tuner:
    grid = searcher is None
    callback = MLflowTrialCallback(
        cfg.name,
        study.key,
        study.fixed,
        study_tags(cfg, study),
        cfg.tune.max_epochs,
        cfg.devices_per_trial,
        warm,
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                metric=METRIC,
                mode="max",
                max_t=cfg.tune.max_epochs,
                grace_period=cfg.tune.grace_period,
                reduction_factor=cfg.tune.reduction_factor,
            )
            if cfg.tune.early_stopping
            else FIFOScheduler(),
            num_samples=1 if grid else cfg.tune.num_samples,
            max_concurrent_trials=cfg.tune.max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{cfg.name}__{study.dirname}",
            storage_path=cfg.storage_path,
            callbacks=[callback],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # a trial on a lost node restarts from its last checkpoint on a surviving one
            failure_config=tune.FailureConfig(max_failures=3),
            verbose=0,
        ),
    )


def _trial_records(results: Any, study: StudySpec, max_epochs: int) -> list[TrialRecord]:
    records = []
    for index, res in enumerate(results):
        last = res.metrics or {}
        records.append(
            TrialRecord(
                index=index,
                trial_id=last.get("trial_id", str(index)),
                config={**study.fixed, **(res.config or {})},
                epochs=int(last.get("training_iteration", 0)),
                val_acc=float(last.get(METRIC, 0.0)),
                trainable_params=int(last.get("trainable_params", 0)),
                outcome="error" if res.error else trial_outcome(last, max_epochs),
                error=first_line(res.error),
            )
        )
    return records


def _close_study_run(tracker: Any, key: str, summary: StudySummary) -> None:
    best = summary.best
    metrics = {
        **{f"trials_{k}": v for k, v in summary.counts().items()},
        "best_val_acc": best.val_acc if best else float("nan"),
        METRIC: best.val_acc if best else float("nan"),  # same column as the trials' runs
        "tune_wall_s": summary.wall_s,
        "setup_s": summary.setup_s,
    }
    ray.get(tracker.log_metrics.remote(key, metrics, 0))
    end_tags = {
        "best_trial": best.trial_id if best else "none",
        **({"error": summary.error[:500]} if summary.error else {}),
        **{f"optuna.{k}": v for k, v in summary.optuna_states.items()},
    }
    if best:
        ray.get(tracker.log_params.remote(key, {"best": best.config}))
    ray.get(tracker.log_dict.remote(key, summary.to_json(), "summary.json"))
    ray.get(tracker.end_run.remote(key, "FINISHED" if best else "FAILED", end_tags))


def run_study(
    cfg: SweepConfig, study: StudySpec, tracker: Any, board: Any, resume: bool = False
) -> StudySummary:
    """One Ray Tune ``Tuner.fit`` for one (task, method): runs inside a Ray task.

    ``resume``: continue the study's interrupted Ray Tune experiment (``Tuner.restore``)
    instead of starting a new one, when its state is in ``storage_path``.
    """
    entered = time.time()
    grid = cfg.search.space == "published_grid"
    params = {
        "search.space": cfg.search.space,
        "search.num_samples": cfg.tune.num_samples,
        "search.seed": study.seed,
        **{f"fixed.{k}": v for k, v in study.fixed.items()},
    }
    tags = {**study_tags(cfg, study), "study_hash": study.hash}
    ray.get(tracker.start_run.remote(study.key, study.key, tags, params=params))
    tracker.log_dataset.remote(study.key, study.dataset, "tune")
    board.update.remote(study.key, status="tuning")
    searched = {k: v for k, v in study.space.items() if k not in study.fixed}
    space = to_ray_space(searched, grid)
    warm = []
    if cfg.search.warm_start and not grid:
        earlier = ray.get(tracker.find.remote({"stage": "tune", "method": study.method}))
        warm = warm_points(earlier, study.task, searched, cfg.search.warm_start_top)
        ray.get(tracker.log_params.remote(study.key, {"search.warm_start_points": len(warm)}))
    searcher = None if grid else tpe_searcher(study.seed, cfg.tune.max_epochs, [p for p, _ in warm])
    spec = trial_spec(cfg, study.task, study.method, dict(study.fixed), "tune", cfg.seed)
    if methods.method_class(study.method).needs_prepare():
        spec.prepared_uri = prepare_study(cfg, spec, tracker, study.key)
    trainable = tune.with_resources(
        study_trainable(
            spec,
            CheckpointPolicy(cfg.tune.checkpoint_every, cfg.tune.checkpoint_interval_s),
            f"trial_{cfg.name}__{study.dirname}",
        ),
        {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial},
    )
    experiment = f"{cfg.storage_path.rstrip('/')}/{cfg.name}__{study.dirname}"
    if resume and tune.Tuner.can_restore(experiment):
        # Finished trials stay finished; unfinished and errored ones continue from their
        # last checkpoint; the searcher and ASHA come back with their state.
        tuner = tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=True, param_space=space
        )
        ray.get(tracker.set_tags.remote(study.key, {"resumed": "true"}))
        searcher = restored_searcher(tuner, searcher)
    else:
        tuner = _new_tuner(cfg, study, trainable, space, searcher, warm)
    started = time.time()
    trials = _trial_records(tuner.fit(), study, cfg.tune.max_epochs)
    if resume:
        ray.get(tracker.end_lost_trials.remote(study.key, {t.trial_id for t in trials}))
    best = select_best(trials, cfg.tune.max_epochs)
    summary = StudySummary(
        study=study.key,
        task=study.task,
        method=study.method,
        trials=trials,
        best=best,
        wall_s=time.time() - started,
        study_hash=study.hash,
        optuna_states=searcher.trial_states() if searcher else {},
        prepared_uri=spec.prepared_uri,
        error="" if best else no_result_reason(trials),
        setup_s=started - entered,
    )
    _close_study_run(tracker, study.key, summary)
    board.update.remote(study.key, status="final" if summary.best else "no result")
    return summary
