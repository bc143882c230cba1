"""Every study of a sweep in one Ray Tune run: a searcher and a scheduler per study, one pool.

One ``Tuner`` per study paid Ray Tune's start-up and fresh trial actors for every study
(≈ 10 s each on 2 cores), and left slots idle while one study drained and the next started.
Here one ``Tuner`` runs the whole sweep; its actors are reused from trial to trial across
studies, and the next study's trials are already queued when a slot frees. Each study still
keeps what makes it a study:

* ``MultiStudySearcher`` holds one seeded TPE searcher (or grid) per study, opens studies in
  plan order (MLflow run, warm start, prepare pass) when they are first needed, keeps at most
  ``max_open`` studies open and ``per_study`` trials of a study in flight, and stamps every
  configuration with its study (``STUDY``), the study's prepare artifact and warm source.
* ``MultiStudyScheduler`` gives each study its own ASHA brackets, so one study's rungs never
  stop another study's trials.

A trial's config is its hyper-parameters plus the ``__``-prefixed keys; ``split_config``
separates them, and nothing logged or retrained sees the bookkeeping keys.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from tuner.records import METRIC

log = logging.getLogger("petl_sweep")

#: Bookkeeping keys of a trial's config (not hyper-parameters)
STUDY, PREPARED, WARM = "__study", "__prepared_uri", "__warm_start"
BOOKKEEPING = (STUDY, PREPARED, WARM)

#: The live searcher of each sweep in this process, for the callback's Optuna counts
LIVE: dict[str, MultiStudySearcher] = {}


def study_of(config: dict[str, Any]) -> str:
    """The study key of a trial's config (cheap: no copies; trial callbacks call it often)."""
    return str(config.get(STUDY, ""))


def split_config(config: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(study key, bookkeeping, hyper-parameters) of a trial's config."""
    meta = {k: config[k] for k in BOOKKEEPING if k in config}
    hp = {k: v for k, v in config.items() if k not in BOOKKEEPING}
    return str(meta.get(STUDY, "")), meta, hp


@dataclass
class Opened:
    """What opening a study gives: its TPE searcher (None for a grid), its grid points, its
    prepare artifact and warm-start points (configuration, source task)."""

    searcher: Any = None
    grid: list[dict[str, Any]] = field(default_factory=list)
    prepared_uri: str | None = None
    warm: list[tuple[dict[str, Any], str]] = field(default_factory=list)


@dataclass
class StudyState:
    """One study inside the shared run: how many trials it may still start, which are live."""

    key: str
    total: int
    opened: Opened | None = None
    failed: bool = False
    suggested: int = 0
    live: set[str] = field(default_factory=set)
    #: When the study opened (epoch seconds) and how long opening took
    opened_at: float = 0.0
    setup_s: float = 0.0

    @property
    def exhausted(self) -> bool:
        return self.failed or (self.opened is not None and self.suggested >= self.total)

    @property
    def active(self) -> bool:
        """Open and not done: it holds one of the ``max_open`` places."""
        return (
            self.opened is not None
            and not self.failed
            and (self.suggested < self.total or bool(self.live))
        )


class MultiStudySearcher(Searcher):
    """Suggests the next trial of the first study (in plan order) that may start one.

    ``opener(key)`` opens a study (returns ``Opened``) and may raise: that study is then
    reported through ``on_failed(key, error)`` and skipped, the others go on."""

    def __init__(
        self,
        sweep: str,
        totals: dict[str, int],
        opener: Callable[[str], Opened],
        on_failed: Callable[[str, BaseException], None],
        per_study: int,
        max_open: int,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.sweep, self.opener, self.on_failed = sweep, opener, on_failed
        self.per_study, self.max_open = per_study, max_open
        self.studies = {key: StudyState(key, total) for key, total in totals.items()}
        self.owner: dict[str, str] = {}  # trial id → study key
        LIVE[sweep] = self

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:  # fmt: skip
        return True  # every study's space is its own; the shared one is empty

    def _open(self, state: StudyState) -> bool:
        began = time.time()
        try:
            state.opened = self.opener(state.key)
        except Exception as err:  # one study's broken set-up must not end the sweep
            log.warning("study %s failed to start: %s", state.key, err)
            state.failed = True
            self.on_failed(state.key, err)
            return False
        state.opened_at = time.time()
        state.setup_s = state.opened_at - began
        if not state.opened.searcher:
            state.total = len(state.opened.grid)
        return True

    def _next(self, state: StudyState, trial_id: str) -> dict[str, Any] | None:
        opened = state.opened
        assert opened is not None
        if opened.searcher is None:
            hp = dict(opened.grid[state.suggested])
        else:
            hp = opened.searcher.suggest(trial_id)
            if hp is None or hp == Searcher.FINISHED:
                return None
        config = {**hp, STUDY: state.key, PREPARED: opened.prepared_uri}
        if opened.searcher is not None and state.suggested < len(opened.warm):
            config[WARM] = opened.warm[state.suggested][1]  # Optuna asks these first
        state.suggested += 1
        state.live.add(trial_id)
        self.owner[trial_id] = state.key
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for state in self.studies.values():
            if state.exhausted:
                continue
            if state.opened is None:
                if sum(s.active for s in self.studies.values()) >= self.max_open:
                    return None  # depth first: finish open studies before opening more
                if not self._open(state) or state.exhausted:
                    continue
            if len(state.live) >= self.per_study:
                continue
            config = self._next(state, trial_id)
            if config is not None:
                return config
        if all(s.exhausted for s in self.studies.values()):
            return Searcher.FINISHED
        return None

    def _sub(self, trial_id: str) -> tuple[StudyState | None, Any]:
        state = self.studies.get(self.owner.get(trial_id, ""))
        opened = state.opened if state else None
        return state, (opened.searcher if opened else None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        _, sub = self._sub(trial_id)
        if sub is not None:
            sub.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        state, sub = self._sub(trial_id)
        if state is not None:
            state.live.discard(trial_id)
        if sub is not None:
            sub.on_trial_complete(trial_id, result, error)

    def trial_states(self, key: str) -> dict[str, int]:
        """How the study's Optuna recorded its trials (empty for a grid)."""
        state = self.studies.get(key)
        sub = state.opened.searcher if state and state.opened else None
        return sub.trial_states() if sub is not None else {}

    def get_state(self) -> dict[str, Any]:
        return {"studies": self.studies, "owner": self.owner}

    def set_state(self, state: dict[str, Any]) -> None:
        self.studies, self.owner = state["studies"], state["owner"]
        for study in self.studies.values():
            study.live.clear()  # Ray Tune tells us again about trials it resumes
        LIVE[self.sweep] = self

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def save_state_soon(tune_controller: Any) -> None:
    """Have Ray Tune save the experiment state at the end of this step, not up to 10 s later.

    Ray Tune saves trial statuses and the searcher every 10 s or more. A sweep killed in
    between came back with a trial it had finished (and MLflow had recorded) as unfinished,
    and ran it again, or without the trials suggested since, which it then re-sampled. A
    finished trial is worth one save. Ray 2.60 keeps the throttle in its experiment-state
    manager; if that ever moves, this does nothing and the 10 s rule applies."""
    manager = getattr(tune_controller, "_checkpoint_manager", None)
    if manager is not None and hasattr(manager, "_last_save_time"):
        manager._last_save_time = float("-inf")


class MultiStudyScheduler(FIFOScheduler):
    """One scheduler per study (``make()``: ASHA, or FIFO without early stopping), chosen by
    the trial's ``STUDY``; every finished trial asks for the experiment state to be saved."""

    def __init__(self, make: Callable[[], TrialScheduler]) -> None:
        super().__init__()
        self.make = make
        self.by_study: dict[str, TrialScheduler] = {}

    def _of(self, trial: Any) -> TrialScheduler:
        key = study_of(trial.config)
        if key not in self.by_study:
            self.by_study[key] = self.make()
        return self.by_study[key]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # each study's scheduler was built with its metric and mode

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)
        save_state_soon(tune_controller)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)
