"""Trials that finished after Ray Tune's last save are replayed on ``--resume``, never rerun.

Without a Ray cluster: the searcher is saved as Ray Tune saves it, "runs on" past the save
(the trials that then finish are what MLflow holds), and a second searcher is restored from
the save and told those records. The study must end with exactly its budget, each recorded
trial in it with its recorded id, epochs and accuracy; a grid study must run each point once.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from tuner.records import StudySummary
from tuner.sweep.multiplex import (
    STUDY,
    Closing,
    MultiStudySearcher,
    Opened,
    split_config,
)
from tuner.sweep.plan import StudySpec
from tuner.sweep.reconcile import recorded_trial
from tuner.sweep.recorded import FLAG, RECORDED, RecordedTrial, is_replay
from tuner.sweep.scheduler import MultiStudyScheduler
from tuner.sweep.searcher import tpe_searcher
from tuner.sweep.spaces import Domain

GRID = [{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}]


class _Hooks:
    def __init__(self, grid: bool = False, recorded: dict | None = None, owed=("a",)) -> None:
        self.grid, self._recorded, self._owed = grid, recorded or {}, set(owed)
        self.closed: list[Closing] = []
        self.opened: list[str] = []
        self.reopened: list[str] = []

    def open(self, key: str) -> Opened:
        self.opened.append(key)
        if self.grid:
            return Opened(grid=[dict(p) for p in GRID])
        searcher = tpe_searcher(seed=3, max_epochs=2)
        searcher.set_search_properties("val/acc", "max", {"lr": tune.loguniform(1e-4, 1.0)})
        return Opened(searcher=searcher)

    def close(self, closing: Closing) -> StudySummary:
        self.closed.append(closing)
        return StudySummary(closing.key, "t", "m", closing.trials, None, closing.wall_s, "h")

    def reopen(self, key: str) -> None:
        self.reopened.append(key)

    def recorded(self) -> dict[str, RecordedTrial]:
        return self._recorded

    def owed(self) -> set[str]:
        return self._owed

    def emit(self, event) -> None:
        pass


def _run(searcher: MultiStudySearcher, trial_id: str, curve, flagged: bool = False) -> None:
    """The trial reports one result an epoch and ends (a replay flags its results)."""
    result: dict = {}
    for epoch, acc in enumerate(curve, 1):
        result = {"val/acc": acc, "training_iteration": epoch, "diverged": 0.0}
        if flagged:
            result[FLAG] = 1.0
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def _record(trial_id: str, config: dict, curve, started: int) -> RecordedTrial:
    params = {k: str(v) for k, v in config.items()}
    return RecordedTrial(trial_id, "a", dict(config), tuple(curve), started=started, params=params)


def _crashed(grid: bool, budget: int):
    """A searcher saved after its first suggestion, and the one that ran on past the save."""
    first = MultiStudySearcher({"a": budget}, _Hooks(grid), per_study=1, max_open=1, max_epochs=2)
    config = first.suggest("t1")
    saved = pickle.dumps(first.get_state())  # Ray Tune's last save: t1 just suggested
    return first, config, saved


def _restored(saved: bytes, grid: bool, recorded: dict) -> MultiStudySearcher:
    searcher = MultiStudySearcher({"a": 0}, _Hooks(grid, recorded), 1, 1, max_epochs=2)
    searcher.set_state(pickle.loads(saved))
    return searcher


def test_a_tpe_study_replays_its_recorded_trials_and_keeps_its_budget():
    first, config1, saved = _crashed(grid=False, budget=4)
    _run(first, "t1", (0.4, 0.6))  # finished after the save: known to the save (a)
    config2 = first.suggest("t2")
    _run(first, "t2", (0.5, 0.7))  # created and finished after the save (b)
    first.suggest("t3")  # running at the kill: lost, sampled again
    hp1, hp2 = split_config(config1)[2], split_config(config2)[2]
    recorded = {"t1": _record("t1", hp1, (0.4, 0.6), 1), "t2": _record("t2", hp2, (0.5, 0.7), 2)}

    searcher = _restored(saved, grid=False, recorded=recorded)
    _run(searcher, "t1", (0.4, 0.6), flagged=True)  # Ray Tune resumes t1; its trainable replays
    replay = searcher.suggest("n1")
    assert replay[RECORDED] == "t2" and split_config(replay)[2] == hp2  # before any new one
    _run(searcher, "n1", (0.5, 0.7), flagged=True)
    for t in ("n2", "n3"):  # then the budget's rest, sampled
        assert RECORDED not in searcher.suggest(t)
        _run(searcher, t, (0.3, 0.35))
    assert searcher.suggest("n4") == Searcher.FINISHED  # the budget is spent
    (closing,) = searcher.hooks.closed
    trials = {t.trial_id: t for t in closing.trials}
    assert list(trials) == ["t1", "t2", "n2", "n3"], "the budget, the recorded ids kept"
    assert (trials["t2"].epochs, trials["t2"].val_acc, trials["t2"].outcome) == (
        2,
        0.7,
        "completed",
    )
    assert trials["t2"].config == hp2
    # TPE learnt from the replay as a finished trial, with its epochs; four trials in all
    assert closing.optuna_states == {"COMPLETE": 4}
    study = searcher.studies["a"].opened.searcher.study
    told = [t for t in study.trials if t.params == hp2]
    assert told and told[0].value == 0.7 and told[0].intermediate_values == {1: 0.5, 2: 0.7}


def test_a_grid_study_replays_each_recorded_point_at_its_place_and_runs_the_rest():
    first, config1, saved = _crashed(grid=True, budget=3)
    assert split_config(config1)[2] == GRID[0]
    _run(first, "t1", (0.4, 0.6))
    first.suggest("t2")  # GRID[1]: running at the kill, never recorded
    _run(first, "t2", (0.1, 0.1))
    first.suggest("t3")  # GRID[2]: finished after the save
    recorded = {"t3": _record("t3", GRID[2], (0.5, 0.8), 3)}

    searcher = _restored(saved, grid=True, recorded=recorded)
    _run(searcher, "t1", (0.4, 0.6), flagged=True)
    second = searcher.suggest("n1")
    assert split_config(second)[2] == GRID[1] and RECORDED not in second  # trained again
    _run(searcher, "n1", (0.2, 0.3))
    third = searcher.suggest("n2")
    assert split_config(third)[2] == GRID[2] and third[RECORDED] == "t3"  # replayed, in place
    _run(searcher, "n2", (0.5, 0.8), flagged=True)
    (closing,) = searcher.hooks.closed
    assert [(t.trial_id, t.config["lr"]) for t in closing.trials] == [
        ("t1", 0.1), ("n1", 0.01), ("t3", 0.001)
    ]  # fmt: skip


def test_a_replay_restored_again_is_not_handed_out_twice():
    """A second crash while (or after) a replay ran: the new save knows it by its new id."""
    _, _, saved = _crashed(grid=False, budget=3)
    recorded = {"t2": _record("t2", {"lr": 0.02}, (0.5, 0.7), 2)}
    searcher = _restored(saved, grid=False, recorded=recorded)
    _run(searcher, "t1", (0.4, 0.6))  # (a trial still RUNNING at the kill: trained)
    assert searcher.suggest("n1")[RECORDED] == "t2"
    # saved with the replay in flight; the next restore still has t2 among its records
    again = _restored(pickle.dumps(searcher.get_state()), grid=False, recorded=recorded)
    _run(again, "n1", (0.5, 0.7), flagged=True)  # Ray Tune resumes the replay itself
    assert RECORDED not in again.suggest("n2")
    assert [t.trial_id for t in again.studies["a"].records.values()] == ["t1", "t2"]


def test_a_study_that_finished_after_the_save_is_left_to_the_driver():
    """The driver reuses a study whose run finished after the save: the restored searcher
    must neither reopen it (a second run) nor suggest for it, nor open one it never had."""
    first = MultiStudySearcher({"a": 2, "b": 2}, _Hooks(), per_study=1, max_open=1, max_epochs=2)
    first.suggest("t1")
    saved = pickle.dumps(first.get_state())
    hooks = _Hooks(recorded={"t1": _record("t1", {"lr": 0.1}, (0.4, 0.6), 1)}, owed=("b",))
    searcher = MultiStudySearcher({}, hooks, 1, 1, max_epochs=2)
    searcher.set_state(pickle.loads(saved))
    assert hooks.reopened == []
    config = searcher.suggest("n1")
    assert split_config(config)[0] == "b" and hooks.opened == ["b"]
    _run(searcher, "t1", (0.4, 0.6), flagged=True)  # a's resumed trial replays, and that is all
    assert hooks.closed == [] and searcher.studies["a"].records["t1"].val_acc == 0.6


def test_asha_learns_a_replays_values_but_never_stops_it():
    make = lambda: ASHAScheduler(  # noqa: E731
        time_attr="training_iteration", metric="val/acc", mode="max", max_t=4,
        grace_period=1, reduction_factor=2,
    )  # fmt: skip
    scheduler = MultiStudyScheduler(make)
    trials = [SimpleNamespace(trial_id=f"x{i}", config={STUDY: "a"}) for i in range(4)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    for t, acc in zip(trials[:2], (0.9, 0.95), strict=True):
        scheduler.on_trial_result(None, t, {"training_iteration": 1, "val/acc": acc})
    low = {"training_iteration": 1, "val/acc": 0.1}
    assert scheduler.on_trial_result(None, trials[2], low) == TrialScheduler.STOP
    flagged = scheduler.on_trial_result(None, trials[3], {**low, FLAG: 1.0})
    assert flagged == TrialScheduler.CONTINUE  # it ends where its recorded run ended
    rung = scheduler.by_study["a"]._brackets[0]._rungs[-1][1]
    assert rung["x3"] == 0.1  # and the rung holds its value for later cutoffs


def test_a_finished_trial_run_becomes_a_typed_record():
    study = StudySpec("t", "lora", 1, {"lr": Domain("loguniform", (1e-4, 1.0)),
                                       "rank": Domain("choice", (4, 8)),
                                       "alpha": Domain("choice", (1,))},
                      fixed={"alpha": 1})  # fmt: skip
    run = {
        "run_id": "r1",
        "start_time": 1234,
        "tags": {"trial_id": "abc", "epochs_run": "3", "outcome": "diverged"},
        "params": {"lr": "0.0012345678901", "rank": "8", "alpha": "1"},
        "metrics": {"trainable_params": 640.0, "diverged": 1.0},
    }
    history = [(1, 0.4), (2, 0.5), (2, 0.55), (3, 0.0)]  # step 2 logged twice (resumed)
    trial = recorded_trial(run, study, history)
    assert trial.config == {"lr": 0.0012345678901, "rank": 8}  # typed, fixed ones left out
    assert trial.curve == (0.4, 0.55, 0.0) and trial.epochs == 3
    assert trial.result(3) == {"val/acc": 0.0, "epoch": 3, "diverged": 1.0,
                               "trainable_params": 640, FLAG: 1.0}  # fmt: skip
    assert trial.result(2)["diverged"] == 0.0
    assert recorded_trial({**run, "params": {"lr": "7.0", "rank": "8"}}, study, history) is None


def test_a_replay_is_told_apart_from_a_trial_that_trains():
    recorded = {"abc": _record("abc", {"lr": 0.1}, (0.5,), 1)}
    known = SimpleNamespace(trial_id="abc", config={STUDY: "a"})  # (a): by its own id
    marked = SimpleNamespace(trial_id="n1", config={STUDY: "a", RECORDED: "abc"})  # (b)
    other = SimpleNamespace(trial_id="n2", config={STUDY: "a"})
    assert is_replay(known, recorded) and is_replay(marked, recorded)
    assert not is_replay(other, recorded)
    assert split_config(marked.config)[2] == {}  # the marker is bookkeeping, not an hp


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
