"""One study, (task, method): its tags, how it opens, how its trials become a summary.

Each (task, method) is its own study with its own equal budget, its own seeded TPE sampler
(or grid) and its own ASHA brackets, though every study of a sweep runs in one shared Ray
Tune run (``tuner.sweep.shared_run``). ``open_study`` starts the study when its first trial
is due: its MLflow run, warm-start points, searcher, and, for a method with a ``prepare``
pass (SPT's sensitivity), that pass once, on a trial-sized slot; every trial and final run
then reuses its artifact. ``close_study`` turns its finished trials (as the searcher recorded
them, ``tuner.sweep.multiplex``) into a ``StudySummary``, logged and ended in MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray import tune

from tuner import methods
from tuner.backbones import resolve_backbone
from tuner.config import SweepConfig
from tuner.records import METRIC, StudySummary, TrialRecord, variant_tag
from tuner.replay.prior import with_prior
from tuner.sweep.multiplex import Closing, Opened
from tuner.sweep.plan import StudySpec
from tuner.sweep.searcher import tpe_searcher
from tuner.sweep.spaces import Domain, grid_points
from tuner.sweep.specs import trial_spec
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
        "train": cfg.train.model_dump(exclude=cfg.train.RESULT_NEUTRAL),
        "final_epochs": cfg.final_epochs,
        "space": cfg.search.space,
    }
    if cfg.search.sampler != "auto":  # (absent when auto: earlier protocols keep their hash)
        content["sampler"] = cfg.search.sampler
    return content_hash(content, 8)


def replay_tag(cfg: SweepConfig) -> dict[str, str]:
    """``replay``: the table a replayed sweep's runs come from (absent in a real sweep)."""
    return {"replay": cfg.replay.source} if cfg.replay else {}


def study_tags(cfg: SweepConfig, study: StudySpec) -> dict[str, str]:
    return {
        "task": study.task,
        "method": study.method,
        "backbone": cfg.backbone,
        "protocol": protocol_hash(cfg),
        "stage": "tune",
        "study": study.key,
        "sweep": cfg.name,
        # what each trial holds: a trial killed before it logged device-hours is costed
        # from its epochs by the leaderboard (tuner.leaderboard.unfinished.spent_hours)
        "devices": f"{cfg.devices_per_trial:g}",
        **variant_tag(study.fixed),
        **replay_tag(cfg),
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


def searched_space(study: StudySpec) -> dict[str, Domain]:
    """The study's space less its fixed options (those are the same in every trial)."""
    return {k: v for k, v in study.space.items() if k not in study.fixed}


def study_total(cfg: SweepConfig, study: StudySpec) -> int:
    """Trials in the study: every grid point, or the sweep's ``num_samples`` for TPE."""
    if cfg.grid_search:
        return len(study.points or grid_points(searched_space(study)))
    return cfg.tune.num_samples


def open_study(cfg: SweepConfig, study: StudySpec, tracker: Any, board: Any) -> Opened:
    """Start the study: its MLflow run, its searcher (warm-started on request) or grid, and
    its prepare pass. Raises if any of it fails (the sweep then marks the study FAILED).

    A resumed sweep whose Ray Tune state was saved before the study opened opens it again:
    the run the driver adopted continues (its params and dataset are logged already; MLflow
    refuses a param logged twice with another value, e.g. a new warm-start count)."""
    grid = cfg.grid_search
    continuing = ray.get(tracker.has_run.remote(study.key))
    if continuing:
        ray.get(tracker.set_tags.remote(study.key, {"resumed": "true"}))
    else:
        ray.get(tracker.start_run.remote(study.key, study.key, study_run_tags(cfg, study),
                                         params=study_params(cfg, study)))  # fmt: skip
        tracker.log_dataset.remote(study.key, study.dataset, "tune")
    board.update.remote(study.key, status="tuning")
    searched = searched_space(study)
    opened = Opened()
    if grid:
        opened.grid = [dict(p) for p in study.points] or grid_points(searched)
    else:
        if cfg.search.warm_start:
            earlier = ray.get(tracker.find.remote({"stage": "tune", "method": study.method}))
            opened.warm = warm_points(earlier, study.task, searched, cfg.search.warm_start_top)
            count = {"search.warm_start_points": len(opened.warm)}
            if not continuing:
                ray.get(tracker.log_params.remote(study.key, count))
        if cfg.search.prior:  # a replay table's evidence first (tuner.replay.prior)
            opened.warm = with_prior(cfg, study.task, study.method, searched, opened.warm)
            if not continuing:
                ray.get(tracker.log_params.remote(study.key, {"search.prior": cfg.search.prior}))
        first = [p for p, _ in opened.warm]
        opened.searcher = tpe_searcher(study.seed, cfg.tune.max_epochs, first)
        opened.searcher.set_search_properties(METRIC, "max", to_ray_space(searched, False))
    if not cfg.replay and methods.method_class(study.method).needs_prepare():
        spec = trial_spec(cfg, study.task, study.method, dict(study.fixed), "tune", cfg.seed)
        opened.prepared_uri = prepare_study(cfg, spec, tracker, study.key)
    return opened


def study_run_tags(cfg: SweepConfig, study: StudySpec) -> dict[str, str]:
    """The tags of a study's own (parent) run: its trials' tags and its content hash."""
    return {**study_tags(cfg, study), "study_hash": study.hash}


def study_params(cfg: SweepConfig, study: StudySpec) -> dict[str, Any]:
    return {
        "search.space": cfg.search.space,
        "search.sampler": "grid" if cfg.grid_search else "tpe",
        "search.num_samples": cfg.tune.num_samples,
        "search.seed": study.seed,
        **{f"fixed.{k}": v for k, v in study.fixed.items()},
    }


def close_study(cfg: SweepConfig, study: StudySpec, tracker: Any, closing: Closing) -> StudySummary:
    """The study's summary (best trial by final-epoch val accuracy), logged and ended in
    MLflow."""
    best = select_best(closing.trials, cfg.tune.max_epochs)
    summary = StudySummary(
        study=study.key,
        task=study.task,
        method=study.method,
        trials=closing.trials,
        best=best,
        wall_s=closing.wall_s,
        study_hash=study.hash,
        optuna_states=closing.optuna_states,
        prepared_uri=closing.prepared_uri,
        error="" if best else no_result_reason(closing.trials),
        setup_s=closing.setup_s,
    )
    _log_summary(tracker, study.key, summary)
    return summary


def _log_summary(tracker: Any, key: str, summary: StudySummary) -> None:
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
