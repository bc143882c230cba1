"""The shared run's searcher and scheduler, without a Ray cluster: every study keeps its own
budget, concurrency, TPE state and ASHA rungs while sharing one Ray Tune run, and the
searcher alone decides when a study is over (one event per study, constant work per event)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from tuner.config import ResourceSettings, SweepConfig
from tuner.records import StudyEnded, StudyFailed, StudySummary
from tuner.sweep.multiplex import (
    PREPARED,
    STUDY,
    WARM,
    Closing,
    MultiStudySearcher,
    Opened,
    StudyState,
    split_config,
)
from tuner.sweep.scheduler import MultiStudyScheduler
from tuner.sweep.searcher import tpe_searcher
from tuner.sweep.shared_run import open_limits


class _Hooks:
    """The sweep around the searcher, recorded: what it opened, closed, reopened, emitted."""

    def __init__(self, opened: list[str], broken=(), grid=(), tpe: bool = True) -> None:
        self.opened, self.broken, self.grid, self.tpe = opened, broken, grid, tpe
        self.closed: list[Closing] = []
        self.reopened: list[str] = []
        self.events: list = []

    def open(self, key: str) -> Opened:
        self.opened.append(key)
        if key in self.broken:
            raise RuntimeError(f"{key}: corrupt sensitivity file")
        if key in self.grid or not self.tpe:
            return Opened(grid=[{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}])
        searcher = tpe_searcher(seed=len(self.opened), max_epochs=2, first=[{"lr": 0.5}])
        searcher.set_search_properties("val/acc", "max", {"lr": tune.loguniform(1e-4, 1.0)})
        return Opened(
            searcher=searcher,
            prepared_uri=f"file:///{key}.safetensors",
            warm=[({"lr": 0.5}, "synth/other")],
        )

    def close(self, closing: Closing) -> StudySummary:
        self.closed.append(closing)
        return StudySummary(closing.key, "t", "m", closing.trials, None, closing.wall_s, "h")

    def reopen(self, key: str) -> None:
        self.reopened.append(key)

    def recorded(self) -> dict:
        return {}

    def owed(self) -> set[str]:
        return {"a", "b", "c"}  # every study these tests use

    def emit(self, event) -> None:
        self.events.append(event)


def _searcher(totals, opened, per_study=2, max_open=2, **kw) -> MultiStudySearcher:
    hooks = _Hooks(opened, **kw)
    searcher = MultiStudySearcher(
        totals, hooks, per_study=per_study, max_open=max_open, max_epochs=2,
        fixed={"a": {"rank": 4}},
    )  # fmt: skip
    return searcher


def _failures(searcher: MultiStudySearcher) -> list[tuple[str, str]]:
    return [(e.study, e.reason) for e in searcher.hooks.events if isinstance(e, StudyFailed)]


def _finish(searcher: MultiStudySearcher, trial_id: str, acc: float = 0.5) -> None:
    result = {"val/acc": acc, "training_iteration": 2, "diverged": 0.0}
    searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_studies_open_in_order_with_their_own_concurrency_and_budget():
    opened = []
    searcher = _searcher({"a": 3, "b": 3, "c": 3}, opened, max_open=2)
    configs = {t: searcher.suggest(t) for t in ("1", "2", "3", "4", "5")}
    # two trials of a (its cap), two of b, and c waits: only two studies may be open
    assert [split_config(c)[0] if c else None for c in configs.values()] == [
        "a", "a", "b", "b", None
    ]  # fmt: skip
    assert opened == ["a", "b"]
    _finish(searcher, "1")
    assert split_config(searcher.suggest("6"))[0] == "a"  # a's third and last trial
    _finish(searcher, "2")
    assert searcher.suggest("7") is None  # a is exhausted but still has trial 6 in flight
    _finish(searcher, "6")
    assert split_config(searcher.suggest("8"))[0] == "c"  # a closed: c may open
    assert opened == ["a", "b", "c"] and _failures(searcher) == []


def test_a_trials_config_carries_its_study_prepare_artifact_and_warm_source():
    searcher = _searcher({"a": 2}, [])
    first, second = searcher.suggest("1"), searcher.suggest("2")
    study, meta, hp = split_config(first)
    assert study == "a" and hp == {"lr": 0.5}  # the warm-start point is asked first
    assert meta == {STUDY: "a", PREPARED: "file:///a.safetensors", WARM: "synth/other"}
    assert WARM not in second and set(split_config(second)[2]) == {"lr"}


def test_a_study_that_cannot_open_is_reported_and_skipped():
    opened = []
    searcher = _searcher({"a": 1, "b": 1}, opened, broken=("a",))
    config = searcher.suggest("1")
    assert split_config(config)[0] == "b"
    assert _failures(searcher) == [("a", "RuntimeError: a: corrupt sensitivity file")]
    _finish(searcher, "1")
    assert searcher.suggest("2") == Searcher.FINISHED
    # one event per study: a's failure, then b's end once its only trial ended
    assert [type(e) for e in searcher.hooks.events] == [StudyFailed, StudyEnded]


def test_grid_studies_run_every_point_once_then_the_search_finishes():
    searcher = _searcher({"g": 99}, [], grid=("g",), per_study=5)
    points = [searcher.suggest(str(i)) for i in range(4)]
    assert [split_config(p)[2]["lr"] for p in points[:3]] == [0.1, 0.01, 0.001]
    # every point handed out: nothing more to suggest (Ray Tune lets live trials finish)
    assert points[3] == Searcher.FINISHED
    assert searcher.studies["g"].total == 3 and searcher.studies["g"].live == {"0", "1", "2"}


def test_asha_stops_reach_each_studys_own_optuna_as_pruned():
    searcher = _searcher({"a": 2, "b": 1}, [])
    searcher.suggest("1"), searcher.suggest("2"), searcher.suggest("3")
    early = {"val/acc": 0.1, "training_iteration": 1, "diverged": 0.0}
    searcher.on_trial_result("1", early)
    searcher.on_trial_complete("1", early)  # stopped at epoch 1 of 2
    _finish(searcher, "2")
    _finish(searcher, "3")
    assert searcher.trial_states("a") == {"PRUNED": 1, "COMPLETE": 1}
    assert searcher.trial_states("b") == {"COMPLETE": 1}


def test_state_survives_save_and_restore(tmp_path):
    searcher = _searcher({"a": 3}, [])
    searcher.suggest("1")
    _finish(searcher, "1", 0.9)
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    fresh = _searcher({"a": 3}, [])
    fresh.restore(str(path))
    state = fresh.studies["a"]
    assert state.suggested == 1 and state.opened is not None
    assert fresh.trial_states("a") == {"COMPLETE": 1}
    assert fresh.hooks.reopened == ["a"]  # the open study gets its MLflow run back
    assert split_config(fresh.suggest("2"))[0] == "a"
    assert state.records["1"].val_acc == 0.9  # its finished trial is remembered


def _trial(trial_id: str, study: str):
    return SimpleNamespace(trial_id=trial_id, config={STUDY: study, "lr": 0.1})


def test_each_study_gets_its_own_asha_rungs():
    """A good study's rung must not stop a weaker study's trials."""
    make = lambda: ASHAScheduler(  # noqa: E731
        time_attr="training_iteration", metric="val/acc", mode="max", max_t=4,
        grace_period=1, reduction_factor=2,
    )  # fmt: skip
    scheduler = MultiStudyScheduler(make)
    good = [_trial(f"g{i}", "good") for i in range(3)]
    weak = [_trial(f"w{i}", "weak") for i in range(3)]
    for t in good + weak:
        scheduler.on_trial_add(None, t)
    for t, acc in zip(good, (0.9, 0.95, 0.99), strict=True):
        scheduler.on_trial_result(None, t, {"training_iteration": 1, "val/acc": acc})
    decisions = [
        scheduler.on_trial_result(None, t, {"training_iteration": 1, "val/acc": acc})
        for t, acc in zip(weak, (0.30, 0.35, 0.40), strict=True)
    ]
    # against the good study's rung every weak trial would stop; in its own, its best goes on
    assert decisions[-1] == TrialScheduler.CONTINUE
    assert set(scheduler.by_study) == {"good", "weak"}


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_study_closes_once_when_its_budget_is_spent_and_its_last_trial_ended():
    searcher = _searcher({"a": 3, "b": 1}, [], per_study=3, max_open=2)
    for t in ("1", "2", "3", "4"):
        searcher.suggest(t)
    _finish(searcher, "2", 0.7)
    early = {"val/acc": 0.2, "training_iteration": 1, "diverged": 0.0}
    searcher.on_trial_result("3", early)
    searcher.on_trial_complete("3", early)
    assert searcher.hooks.closed == []  # trial 1 of a is still running
    scheduler = MultiStudyScheduler(FIFOScheduler, searcher)
    failed = SimpleNamespace(
        trial_id="1", config={STUDY: "a"}, status="ERROR", error_file="error.txt",
        get_error=lambda: RuntimeError("CUDA OOM"),
    )  # fmt: skip
    scheduler.on_trial_error(None, failed)
    searcher.on_trial_complete("1", None, error=True)
    (closing,) = searcher.hooks.closed
    assert closing.key == "a" and [t.trial_id for t in closing.trials] == ["1", "2", "3"]
    one, two, three = closing.trials
    assert (one.outcome, one.error) == ("error", "CUDA OOM")
    assert (two.outcome, two.val_acc, two.epochs) == ("completed", 0.7, 2)
    assert three.outcome == "stopped_early" and two.config["rank"] == 4  # fixed options kept
    assert closing.optuna_states == {"FAIL": 1, "COMPLETE": 1, "PRUNED": 1}
    searcher.on_trial_complete("1", None, error=True)  # told again: nothing closes twice
    assert len(searcher.hooks.closed) == 1
    assert [e.study for e in searcher.hooks.events] == ["a"]


def _count_study_visits(monkeypatch) -> list[int]:
    """Count every look at a study's state (its ``exhausted``/``active`` properties)."""
    visits = [0]
    for name in ("exhausted", "active"):
        prop = getattr(StudyState, name)

        def counted(self, _get=prop.fget):
            visits[0] += 1
            return _get(self)

        monkeypatch.setattr(StudyState, name, property(counted))
    return visits


def _drive_sweep(studies: int, monkeypatch) -> tuple[int, int, int]:
    """Run ``studies`` grid studies of 3 trials through the searcher, 4 slots; return
    (most study visits in one event, events, studies closed)."""
    visits = _count_study_visits(monkeypatch)
    totals = {f"s{i}": 3 for i in range(studies)}
    searcher = MultiStudySearcher(totals, _Hooks([], tpe=False), per_study=2, max_open=3,
                                  max_epochs=2)  # fmt: skip
    live: list[str] = []
    worst = events = n = 0
    while True:
        while len(live) < 4:
            before = visits[0]
            config = searcher.suggest(str(n))
            worst, events = max(worst, visits[0] - before), events + 1
            if not isinstance(config, dict):
                break
            live.append(str(n))
            n += 1
        if not live:
            break
        before = visits[0]
        _finish(searcher, live.pop(0))
        worst, events = max(worst, visits[0] - before), events + 1
    return worst, events, len(searcher.hooks.closed)


def test_work_per_event_does_not_grow_with_the_sweep(monkeypatch):
    """200 studies cost the searcher as much per trial event as 20: it looks at the open
    studies only, never scans every study (or trial) of the sweep."""
    small, events_small, closed_small = _drive_sweep(20, monkeypatch)
    large, events_large, closed_large = _drive_sweep(200, monkeypatch)
    assert (closed_small, closed_large) == (20, 200)
    assert events_large > 9 * events_small  # ten times the trials ...
    assert large == small and large <= 12  # ... and the same bounded work for each


class _Controller:
    """Ray Tune's controller as a scheduler sees it, refusing the scan of every trial."""

    def __init__(self, live) -> None:
        self.live = live

    def get_live_trials(self):
        return list(self.live)  # a set in Ray Tune: no order to rely on

    def get_trials(self):
        raise AssertionError("a scan of every trial of the experiment")


def test_the_scheduler_picks_the_first_waiting_trial_among_the_live_ones_only():
    scheduler = MultiStudyScheduler(FIFOScheduler)
    trials = [_trial(str(i), "a" if i % 2 else "b") for i in range(5)]
    for trial, status in zip(trials, ("RUNNING", "PAUSED", "PENDING", "PAUSED", "PENDING"),
                             strict=True):  # fmt: skip
        trial.status = status
        scheduler.on_trial_add(None, trial)
    controller = _Controller(trials[::-1])
    assert scheduler.choose_trial_to_run(controller) is trials[2]  # pending before paused
    controller.live = [t for t in trials if t.status != "PENDING"]
    assert scheduler.choose_trial_to_run(controller) is trials[1]  # then the first paused
    controller.live = trials[:1]
    assert scheduler.choose_trial_to_run(controller) is None
    for trial in trials[:3]:
        scheduler.on_trial_complete(None, trial, {"val/acc": 0.5, "training_iteration": 1})
    scheduler.on_trial_remove(None, trials[3])
    assert list(scheduler.added) == ["4"]  # only live trials are remembered


def test_open_studies_leave_trials_waiting_for_every_slot():
    """Twice the slots' trials can be in flight: an ending trial's actor always finds a
    waiting trial to run next (Ray Tune reuses it), plus two studies' worth draining."""
    cfg = SweepConfig.model_validate({"name": "s", "tasks": ["synth/objects"], "methods": ["lora"],
                                      "tune": {"max_concurrent_trials": 8}})  # fmt: skip
    assert open_limits(cfg, {"CPU": 16}) == (8, 6)
    assert open_limits(cfg, {"CPU": 8}) == (8, 4)
    per_study, max_open = open_limits(cfg, {"CPU": 3})
    assert per_study * (max_open - 2) >= 2 * 3
    pinned = cfg.model_copy(update={"resources": ResourceSettings(max_concurrent_studies=1)})
    assert open_limits(pinned, {"CPU": 16}) == (8, 1)


def test_a_scheduler_pickled_before_the_live_trial_order_restores_and_runs_fifo():
    """``Tuner.restore`` unpickles the scheduler a sweep began with; one from a release that
    had no ``added``/``sequence`` must come back with them and choose pending trials in the
    order they are added again."""
    old = MultiStudyScheduler(FIFOScheduler)
    del old.added, old.sequence  # as an older release pickled it
    restored = pickle.loads(pickle.dumps(old))
    assert (restored.added, restored.sequence) == ({}, 0)
    trials = [SimpleNamespace(status="PENDING", **vars(_trial(f"t{i}", "a"))) for i in range(3)]
    for trial in (trials[2], trials[0], trials[1]):
        restored.on_trial_add(None, trial)
    controller = SimpleNamespace(get_live_trials=lambda: trials)
    assert restored.choose_trial_to_run(controller) is trials[2]
    trials[2].status = "TERMINATED"
    restored.on_trial_complete(None, trials[2], {})
    assert restored.choose_trial_to_run(controller) is trials[0]  # the next one added
