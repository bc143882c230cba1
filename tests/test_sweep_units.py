"""Units of the sweep that need no Ray cluster: Optuna honesty, selection, spaces, plan."""

from __future__ import annotations

import optuna
import pytest
from ray import tune

from tuner.config import parse_config
from tuner.records import TrialRecord, trial_outcome
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.multiplex import PREPARED, STUDY
from tuner.sweep.plan import plan, stable_seed
from tuner.sweep.searcher import TPESearcher, tpe_searcher
from tuner.sweep.spaces import Domain, grid_points
from tuner.sweep.specs import trial_spec
from tuner.sweep.study import select_best, to_ray_space

MAX_EPOCHS = 4


def _searcher() -> TPESearcher:
    searcher = tpe_searcher(seed=0, max_epochs=MAX_EPOCHS)
    searcher.set_search_properties("val/acc", "max", {"lr": tune.loguniform(1e-4, 1e-1)})
    return searcher


def _run(searcher, trial_id: str, accs: list[float], diverged: bool = False) -> None:
    assert searcher.suggest(trial_id) is not None
    result = {}
    for epoch, acc in enumerate(accs, start=1):
        result = {"val/acc": acc, "training_iteration": epoch, "diverged": float(diverged)}
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result)


def test_asha_stopped_trials_reach_optuna_as_pruned_with_their_curve():
    searcher = _searcher()
    _run(searcher, "full", [0.2, 0.4, 0.5, 0.6])
    _run(searcher, "cut", [0.1, 0.15])  # ASHA stopped it after 2 of 4 epochs
    _run(searcher, "nan", [0.0], diverged=True)
    trials = {t.number: t for t in searcher.study.trials}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 0.6
    # Optuna keeps a pruned trial's last intermediate value; TPE ranks it as pruned
    assert trials[1].state == optuna.trial.TrialState.PRUNED
    assert trials[1].intermediate_values == {1: 0.1, 2: 0.15}
    # a diverged trial is a real, terrible outcome for its config: complete with 0
    assert trials[2].state == optuna.trial.TrialState.COMPLETE and trials[2].value == 0.0
    assert searcher.told == {"full": "COMPLETE", "cut": "PRUNED", "nan": "COMPLETE"}
    assert searcher.trial_states() == {"COMPLETE": 2, "PRUNED": 1}


def test_tpe_asks_the_warm_points_first_then_samples_inside_the_space():
    searcher = tpe_searcher(seed=3, max_epochs=2, first=[{"lr": 0.05}])
    searcher.set_search_properties("val/acc", "max", {"lr": tune.loguniform(1e-4, 1e-1)})
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first == {"lr": 0.05}
    assert 1e-4 <= second["lr"] <= 1e-1 and second != first
    searcher.on_trial_complete("a", {"val/acc": float("nan"), "training_iteration": 2})
    searcher.on_trial_complete("b", None, error=True)
    assert searcher.told == {"a": "FAIL", "b": "FAIL"}
    searcher.on_trial_complete("b", None, error=True)  # told once only
    assert searcher.trial_states() == {"FAIL": 2}


def test_trial_outcome():
    assert trial_outcome(None, 4) == "error"
    assert trial_outcome({"training_iteration": 4, "diverged": 0.0}, 4) == "completed"
    assert trial_outcome({"training_iteration": 2, "diverged": 0.0}, 4) == "stopped_early"
    assert trial_outcome({"training_iteration": 1, "diverged": 1.0}, 4) == "diverged"


def _trial(index, acc, outcome="completed", epochs=MAX_EPOCHS, params=10):
    return TrialRecord(index, f"t{index}", {}, epochs, acc, params, outcome)


def test_select_best_uses_final_epoch_val_of_full_trials_only():
    trials = [
        _trial(0, 0.70),
        _trial(1, 0.90, outcome="stopped_early", epochs=2),  # higher, but a short run
        _trial(2, 0.75, params=50),
        _trial(3, 0.75, params=20),  # tie on val: fewer parameters wins
        _trial(4, 0.95, outcome="diverged", epochs=1),
    ]
    assert select_best(trials, MAX_EPOCHS).trial_id == "t3"
    assert select_best([_trial(0, 0.9, outcome="stopped_early", epochs=1)], MAX_EPOCHS) is None
    # what selection sees of a trial has no test metric at all: it cannot select on test
    assert not any("test" in name for name in TrialRecord.__dataclass_fields__)


def test_plan_is_one_study_per_task_and_method_with_stable_seeds():
    cfg = parse_config(
        {"name": "p", "tasks": ["synth/count", "synth/textures"], "methods": ["linear", "lora"]}
    )
    studies = plan(cfg)
    assert [s.key for s in studies] == [
        "synth/count:linear",
        "synth/count:lora",
        "synth/textures:linear",
        "synth/textures:lora",
    ]
    assert len({s.seed for s in studies}) == 4
    assert studies[1].seed == stable_seed(0, "synth/count", "lora")
    assert "rank" in studies[1].space and "lr" in studies[1].space


def test_ray_space_conversion_and_grid():
    space = {
        "lr": Domain("loguniform", (1e-4, 1e-2)),
        "rank": Domain("choice", (1, 8)),
        "steps": Domain("int", (1, 3)),
        "fixed": Domain("fixed", (5,)),
    }
    ray_space = to_ray_space(space, grid=False)
    assert ray_space["fixed"] == 5
    assert ray_space["lr"].lower == pytest.approx(1e-4) and ray_space["steps"].upper == 4
    grid = {"lr": Domain("choice", (1e-3, 1e-2)), "rank": Domain("choice", (1, 8, 16))}
    assert to_ray_space(grid, grid=True)["rank"] == {"grid_search": [1, 8, 16]}
    assert len(grid_points(grid)) == 6


def test_the_sweep_trainable_gives_each_trial_its_studys_spec_and_prepare_artifact(
    monkeypatch,
):
    import tuner.sweep.trainable

    seen = []
    monkeypatch.setattr(
        tuner.sweep.trainable,
        "tune_trainable",
        lambda config, spec, policy, stop: seen.append((config, spec.method, spec.prepared_uri)),
    )
    cfg = parse_config({"name": "s", "tasks": ["synth/count"], "methods": ["lora", "linear"]})
    specs = {
        f"synth/count:{m}": trial_spec(cfg, "synth/count", m, {}, "tune", 0)
        for m in ("lora", "linear")
    }
    run = tuner.sweep.trainable.sweep_trainable(specs, CheckpointPolicy(), "trial_s")
    assert run.__name__ == "trial_s"
    run({"lr": 0.1, STUDY: "synth/count:linear", PREPARED: None})
    run({"lr": 0.2, STUDY: "synth/count:lora", PREPARED: "file:///x.safetensors"})
    assert seen == [({"lr": 0.1}, "linear", None), ({"lr": 0.2}, "lora", "file:///x.safetensors")]


def test_checkpoints_follow_the_time_and_epoch_rules_and_never_end_a_trial():
    timed = CheckpointPolicy(every_epochs=0, every_s=60)
    # one-second epochs: the 60th epoch after the last checkpoint writes one, not the 59th
    assert [e for e in range(1, 130) if timed.due(e, float(e % 60 or 60), False)] == [60, 120]
    assert not timed.due(60, 60.0, last_epoch=True)  # nothing resumes a finished trial
    both = CheckpointPolicy(every_epochs=10, every_s=60)
    assert both.due(10, 1.0, False) and both.due(7, 61.0, False) and not both.due(7, 1.0, False)
    assert not CheckpointPolicy(0, 0).due(10, 1e9, False)


def test_a_studys_fixed_options_tag_its_runs_as_a_variant():
    from tuner.leaderboard.collect import row_key
    from tuner.sweep.study import study_tags

    cfg = parse_config({"name": "x", "tasks": ["synth/count"], "methods": ["spt_lora", "lora"],
                        "search": {"fixed": {"spt_lora": {"allocation": "random"}}}})  # fmt: skip
    spt, lora = sorted(plan(cfg), key=lambda s: s.method, reverse=True)
    assert study_tags(cfg, spt)["variant"] == "allocation=random"
    assert "variant" not in study_tags(cfg, lora)
    assert row_key(study_tags(cfg, spt))[2] == "spt_lora (allocation=random)"


def test_tpe_can_sample_the_published_grid_values_as_its_own_study():
    from tuner.config import ConfigError
    from tuner.sweep.plan import study_hash
    from tuner.sweep.study import protocol_hash, study_total

    base = {"name": "s", "tasks": ["synth/count"], "methods": ["lora"],
            "search": {"space": "published_grid"}, "tune": {"num_samples": 3}}  # fmt: skip
    grid = parse_config(base)
    tpe = parse_config({**base, "search": {"space": "published_grid", "sampler": "tpe"}})
    assert grid.grid_search and not tpe.grid_search
    (study,) = plan(grid)
    assert study_total(grid, study) == len(grid_points(study.space)) > 3
    assert study_total(tpe, study) == 3  # TPE's budget, over the grid's values
    for domain in study.space.values():  # every grid key is a choice TPE can sample
        assert domain.kind == "choice"
    assert study_hash(grid, study) != study_hash(tpe, study)
    assert protocol_hash(grid) != protocol_hash(tpe)
    explicit = parse_config({**base, "search": {"space": "published_grid", "sampler": "auto"}})
    assert study_hash(explicit, study) == study_hash(grid, study)
    with pytest.raises((ConfigError, ValueError), match=r"search\.sampler"):
        parse_config({**base, "search": {"space": "optuna", "sampler": "grid"}})
