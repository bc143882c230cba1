"""Every study of a sweep in one Ray Tune run, and the one class that decides a study's life.

One ``Tuner`` per study paid Ray Tune's start-up and fresh trial actors for every study
(≈ 10 s each on 2 cores), and left slots idle while one study drained and the next started.
Here one ``Tuner`` runs the whole sweep; its actors are reused from trial to trial across
studies, and the next study's trials are already queued when a slot frees. Each study still
keeps what makes it a study:

* ``MultiStudySearcher`` holds one seeded TPE searcher (or grid) per study, opens studies in
  plan order (MLflow run, warm start, prepare pass) when they are first needed, keeps at most
  ``max_open`` studies open and ``per_study`` trials of a study in flight, and stamps every
  configuration with its study (``STUDY``), the study's prepare artifact and warm source.
  It is also the *only* place that decides a study is over: it is told every trial's end,
  keeps the study's ``TrialRecord``s, and when a study has handed out its budget and has no
  live trial it closes it and emits one ``StudyEnded`` (or, if it could not open,
  ``StudyFailed``) to the driver. That is O(1) work per trial event, whatever the sweep's
  size, and its state is saved and restored with the experiment.
* ``MultiStudyScheduler`` (``tuner.sweep.scheduler``) gives each study its own ASHA
  brackets, so one study's rungs never stop another study's trials.

A trial's config is its hyper-parameters plus the ``__``-prefixed keys; ``split_config``
separates them, and nothing logged or retrained sees the bookkeeping keys.
"""

from __future__ import annotations

import logging
import pickle
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray.tune.search import Searcher

from tuner.records import (
    METRIC,
    StudyEnded,
    StudyEvent,
    StudyFailed,
    StudySummary,
    TrialRecord,
    first_line,
    trial_outcome,
)
from tuner.sweep.recorded import RECORDED, RecordedTrial, Replays

log = logging.getLogger("petl_sweep")

#: Bookkeeping keys of a trial's config (not hyper-parameters)
STUDY, PREPARED, WARM = "__study", "__prepared_uri", "__warm_start"
BOOKKEEPING = (STUDY, PREPARED, WARM, RECORDED)


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
class Closing:
    """What closing a study hands to ``StudyHooks.close``: its trials, in the order they were
    suggested, how long it took to open and to tune, and how Optuna recorded its trials."""

    key: str
    trials: list[TrialRecord]
    setup_s: float
    wall_s: float
    optuna_states: dict[str, int]
    prepared_uri: str | None


class StudyHooks(Protocol):
    """What the searcher needs of the sweep around it (``shared_run.StudyLife``): picklable,
    since Ray Tune saves the searcher with the experiment."""

    def open(self, key: str) -> Opened: ...

    def close(self, closing: Closing) -> StudySummary: ...

    def reopen(self, key: str) -> None: ...

    def recorded(self) -> dict[str, RecordedTrial]:
        """After a restore: the finished trials to replay (``tuner.sweep.recorded``)."""
        ...

    def owed(self) -> set[str]:
        """After a restore: the studies this run tunes (the driver reuses the others)."""
        ...

    def emit(self, event: StudyEvent) -> None: ...


@dataclass
class StudyState:
    """One study inside the shared run: its budget, its live trials and finished records."""

    key: str
    total: int
    #: The study's fixed options, part of every trial record's configuration
    fixed: dict[str, Any] = field(default_factory=dict)
    opened: Opened | None = None
    failed: bool = False
    closed: bool = False
    suggested: int = 0
    live: set[str] = field(default_factory=set)
    #: trial id → (index in suggestion order, hyper-parameters)
    configs: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    #: the last result of each live trial (Ray tells the searcher no result on an error)
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, TrialRecord] = field(default_factory=dict)
    #: The one event that ended the study (kept: a restored run announces it again)
    event: StudyEvent | None = None
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

    def record(
        self, trial_id: str, result: dict | None, error: str, max_epochs: int, recorded: str = ""
    ) -> None:
        """``recorded``: the id of the recorded trial this one replayed (its MLflow run's)."""
        index, hp = self.configs.get(trial_id, (len(self.configs), {}))
        last = result or self.last.pop(trial_id, None) or {}
        self.last.pop(trial_id, None)
        self.records[trial_id] = TrialRecord(
            index=index,
            trial_id=recorded or trial_id,
            config={**self.fixed, **hp},
            epochs=int(last.get("training_iteration", 0)),
            val_acc=float(last.get(METRIC, 0.0)),
            trainable_params=int(last.get("trainable_params", 0)),
            outcome="error" if error else trial_outcome(last or None, max_epochs),
            error=first_line(error) if error else "",
        )


class MultiStudySearcher(Searcher):
    """Suggests the next trial of the first study (in plan order) that may start one, and
    closes each study when its last trial ends.

    ``hooks.open(key)`` opens a study (returns ``Opened``) and may raise: that study is then
    failed (``StudyFailed``) and skipped, the others go on. Once restored, a study hands out
    the recorded trials the restored state never heard of first (``tuner.sweep.recorded``)."""

    def __init__(
        self,
        totals: dict[str, int],
        hooks: StudyHooks,
        per_study: int,
        max_open: int,
        max_epochs: int,
        fixed: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.hooks, self.per_study, self.max_open = hooks, per_study, max_open
        self.max_epochs = max_epochs
        fixed = fixed or {}
        self.studies = {k: StudyState(k, n, dict(fixed.get(k, {}))) for k, n in totals.items()}
        self.owner: dict[str, str] = {}  # trial id → study key
        #: plan order, the next study to open, and the open ones (at most ``max_open``)
        self.order, self.cursor = list(self.studies), 0
        self.active: list[str] = []
        #: error text of failed trials, handed over by the scheduler (it sees the trial)
        self.errors: dict[str, str] = {}
        self.replays = Replays()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:  # fmt: skip
        return True  # every study's space is its own; the shared one is empty

    # -- opening and suggesting -----------------------------------------------------------
    def _open(self, state: StudyState) -> bool:
        began = time.time()
        try:
            state.opened = self.hooks.open(state.key)
        except Exception as err:  # one study's broken set-up must not end the sweep
            log.warning("study %s failed to start: %s", state.key, err)
            state.failed = state.closed = True
            detail = "".join(traceback.format_exception(err))
            state.event = StudyFailed(state.key, first_line(err), detail)
            self.hooks.emit(state.event)
            return False
        state.opened_at = time.time()
        state.setup_s = state.opened_at - began
        if not state.opened.searcher:
            state.total = len(state.opened.grid)
            self._close_if_over(state)  # an empty grid has nothing to wait for
        return True

    def _next(self, state: StudyState, trial_id: str) -> dict[str, Any] | None:
        opened = state.opened
        assert opened is not None
        point = opened.grid[state.suggested] if opened.searcher is None else None
        replay = self.replays.take(state.key, point)
        if point is not None:
            hp = dict(point)
        elif replay is not None:
            hp = dict(replay.config)
        else:
            hp = opened.searcher.suggest(trial_id)
            if hp is None or hp == Searcher.FINISHED:
                state.total = state.suggested  # the sub-searcher has nothing more
                self._close_if_over(state)
                return None
        config = {**hp, STUDY: state.key, PREPARED: opened.prepared_uri}
        if replay is not None:
            config[RECORDED] = replay.trial_id
            self.replays.start(trial_id, replay)
        elif opened.searcher is not None and state.suggested < len(opened.warm):
            config[WARM] = opened.warm[state.suggested][1]  # Optuna asks these first
        state.configs[trial_id] = (state.suggested, hp)
        state.suggested += 1
        state.live.add(trial_id)
        self.owner[trial_id] = state.key
        return config

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next trial of the first open study that may start one, opening the next study
        in plan order when fewer than ``max_open`` are open. Looks at the open studies only
        (at most ``max_open``), never at every study of the sweep."""
        self.active = [k for k in self.active if self.studies[k].active]
        for key in self.active:
            state = self.studies[key]
            if not state.exhausted and len(state.live) < self.per_study:
                config = self._next(state, trial_id)
                if config is not None:
                    return config
        while len(self.active) < self.max_open and self.cursor < len(self.order):
            state = self.studies[self.order[self.cursor]]
            self.cursor += 1
            if state.opened is not None or state.closed or not self._open(state):
                continue
            if state.active:
                self.active.append(state.key)
            if not state.exhausted:
                config = self._next(state, trial_id)
                if config is not None:
                    return config
        if self.cursor >= len(self.order) and all(self.studies[k].exhausted for k in self.active):
            return Searcher.FINISHED
        return None

    # -- results and ends -----------------------------------------------------------------
    def _sub(self, trial_id: str) -> tuple[StudyState | None, Any]:
        state = self.studies.get(self.owner.get(trial_id, ""))
        opened = state.opened if state else None
        return state, (opened.searcher if opened else None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        state, sub = self._sub(trial_id)
        if state is not None:
            state.last[trial_id] = result
        if sub is not None:
            sub.on_trial_result(trial_id, result)

    def trial_failed(self, trial_id: str, error: str) -> None:
        """The error text of a trial that failed (told just before ``on_trial_complete``)."""
        self.errors[trial_id] = error or "trial failed"

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        state, sub = self._sub(trial_id)
        text = self.errors.pop(trial_id, "trial failed" if error else "")
        if state is None:
            return
        state.live.discard(trial_id)
        replay = self.replays.live.pop(trial_id, None)
        recorded = replay.trial_id if replay else ""
        state.record(trial_id, result, text if error else "", self.max_epochs, recorded)
        if sub is not None and replay is not None:  # never asked: told as recorded
            sub.tell_recorded(replay.config, replay.curve, result, error)
        elif sub is not None:
            sub.on_trial_complete(trial_id, result, error)
        self._close_if_over(state)

    def _close_if_over(self, state: StudyState) -> None:
        """Close the study once it handed out its budget and its last trial ended."""
        if state.closed or not state.exhausted or state.live:
            return
        state.closed = True
        opened = state.opened
        sub = opened.searcher if opened else None
        closing = Closing(
            key=state.key,
            trials=sorted(state.records.values(), key=lambda t: t.index),
            setup_s=state.setup_s,
            wall_s=time.time() - (state.opened_at or time.time()),
            optuna_states=sub.trial_states() if sub is not None else {},
            prepared_uri=opened.prepared_uri if opened else None,
        )
        state.event = StudyEnded(self.hooks.close(closing))
        self.hooks.emit(state.event)

    def trial_states(self, key: str) -> dict[str, int]:
        """How the study's Optuna recorded its trials (empty for a grid)."""
        state = self.studies.get(key)
        sub = state.opened.searcher if state and state.opened else None
        return sub.trial_states() if sub is not None else {}

    # -- saved with the experiment --------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "owner": self.owner,
            "cursor": self.cursor,
            "active": self.active,
            "replays": self.replays,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Come back as saved: live trials stay live (Ray Tune resumes them). Each open study
        gets its MLflow run back (created if the store never recorded it); a study closed
        before the crash is announced again (the driver ignores what it already has). The
        recorded trials no restored part knows are queued to be handed out first."""
        self.studies, self.owner = state["studies"], state["owner"]
        self.order, self.cursor, self.active = list(self.studies), state["cursor"], state["active"]
        self.replays = state.get("replays") or Replays()
        self.replays.refill(self.hooks.recorded(), set(self.owner))
        owed = self.hooks.owed()
        for study in self.studies.values():
            if study.key not in owed and not study.closed:
                # finished after the save (the driver reuses its run): nothing more to run;
                # its resumed trials replay their records (``tuner.sweep.recorded``)
                study.closed, study.total = True, study.suggested
                self.active = [k for k in self.active if k != study.key]
            elif study.event is not None:
                self.hooks.emit(study.event)
            elif study.opened is not None and not study.closed:
                self.hooks.reopen(study.key)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
