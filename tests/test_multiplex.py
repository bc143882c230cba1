"""The shared run's searcher and scheduler, without a Ray cluster: every study keeps its own
budget, concurrency, TPE state and ASHA rungs while sharing one Ray Tune run."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from tuner.sweep.multiplex import (
    PREPARED,
    STUDY,
    WARM,
    MultiStudyScheduler,
    MultiStudySearcher,
    Opened,
    split_config,
)
from tuner.sweep.searcher import tpe_searcher


def _opener(opened: list[str], broken: tuple[str, ...] = (), grid: tuple[str, ...] = ()):
    def open_(key: str) -> Opened:
        opened.append(key)
        if key in broken:
            raise RuntimeError(f"{key}: corrupt sensitivity file")
        if key in grid:
            return Opened(grid=[{"lr": 0.1}, {"lr": 0.01}, {"lr": 0.001}])
        searcher = tpe_searcher(seed=len(opened), max_epochs=2, first=[{"lr": 0.5}])
        searcher.set_search_properties("val/acc", "max", {"lr": tune.loguniform(1e-4, 1.0)})
        return Opened(
            searcher=searcher,
            prepared_uri=f"file:///{key}.safetensors",
            warm=[({"lr": 0.5}, "synth/other")],
        )

    return open_


def _searcher(totals, opened, failures, per_study=2, max_open=2, **kw) -> MultiStudySearcher:
    return MultiStudySearcher(
        "t",
        totals,
        _opener(opened, **kw),
        lambda key, err: failures.append((key, str(err))),
        per_study=per_study,
        max_open=max_open,
    )


def _finish(searcher: MultiStudySearcher, trial_id: str, acc: float = 0.5) -> None:
    result = {"val/acc": acc, "training_iteration": 2, "diverged": 0.0}
    searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_studies_open_in_order_with_their_own_concurrency_and_budget():
    opened, failures = [], []
    searcher = _searcher({"a": 3, "b": 3, "c": 3}, opened, failures, max_open=2)
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
    assert opened == ["a", "b", "c"] and failures == []


def test_a_trials_config_carries_its_study_prepare_artifact_and_warm_source():
    searcher = _searcher({"a": 2}, [], [])
    first, second = searcher.suggest("1"), searcher.suggest("2")
    study, meta, hp = split_config(first)
    assert study == "a" and hp == {"lr": 0.5}  # the warm-start point is asked first
    assert meta == {STUDY: "a", PREPARED: "file:///a.safetensors", WARM: "synth/other"}
    assert WARM not in second and set(split_config(second)[2]) == {"lr"}


def test_a_study_that_cannot_open_is_reported_and_skipped():
    opened, failures = [], []
    searcher = _searcher({"a": 1, "b": 1}, opened, failures, broken=("a",))
    config = searcher.suggest("1")
    assert split_config(config)[0] == "b"
    assert failures == [("a", "a: corrupt sensitivity file")]
    _finish(searcher, "1")
    assert searcher.suggest("2") == Searcher.FINISHED


def test_grid_studies_run_every_point_once_then_the_search_finishes():
    searcher = _searcher({"g": 99}, [], [], grid=("g",), per_study=5)
    points = [searcher.suggest(str(i)) for i in range(4)]
    assert [split_config(p)[2]["lr"] for p in points[:3]] == [0.1, 0.01, 0.001]
    # every point handed out: nothing more to suggest (Ray Tune lets live trials finish)
    assert points[3] == Searcher.FINISHED
    assert searcher.studies["g"].total == 3 and searcher.studies["g"].live == {"0", "1", "2"}


def test_asha_stops_reach_each_studys_own_optuna_as_pruned():
    searcher = _searcher({"a": 2, "b": 1}, [], [])
    searcher.suggest("1"), searcher.suggest("2"), searcher.suggest("3")
    early = {"val/acc": 0.1, "training_iteration": 1, "diverged": 0.0}
    searcher.on_trial_result("1", early)
    searcher.on_trial_complete("1", early)  # stopped at epoch 1 of 2
    _finish(searcher, "2")
    _finish(searcher, "3")
    assert searcher.trial_states("a") == {"PRUNED": 1, "COMPLETE": 1}
    assert searcher.trial_states("b") == {"COMPLETE": 1}


def test_state_survives_save_and_restore(tmp_path):
    searcher = _searcher({"a": 3}, [], [])
    searcher.suggest("1")
    _finish(searcher, "1", 0.9)
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    fresh = _searcher({"a": 3}, [], [])
    fresh.restore(str(path))
    state = fresh.studies["a"]
    assert state.suggested == 1 and state.opened is not None
    assert fresh.trial_states("a") == {"COMPLETE": 1}
    assert split_config(fresh.suggest("2"))[0] == "a"


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


def test_a_finished_trial_makes_ray_tune_save_its_state_at_once():
    """Without this, a sweep killed within 10 s of a trial's end re-runs that trial."""
    import inspect

    from ray.tune.execution import experiment_state

    # the throttle this relies on is still where Ray 2.60 keeps it
    assert "self._last_save_time" in inspect.getsource(experiment_state)
    manager = SimpleNamespace(_last_save_time=1234.5)
    controller = SimpleNamespace(_checkpoint_manager=manager)
    scheduler = MultiStudyScheduler(_Noop)
    scheduler.on_trial_complete(controller, _trial("t1", "a"), {})
    assert manager._last_save_time == float("-inf")


class _Noop(TrialScheduler):
    def on_trial_complete(self, tune_controller, trial, result):
        pass
