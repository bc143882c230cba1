"""Presets and ``petl-sweep plan``: the seed studies' protocols, resolved without running."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import ConfigError, load_config
from tuner.presets import list_presets, preset_data
from tuner.sweep.estimate import asha_epochs

runner = CliRunner()
STUDY_PRESETS = ("petl_vision_vtab1k", "spt_vtab1k", "vpt_vs_ft")


def _plan(*args: str) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_shows_study_000s_protocol_exactly():
    """PETL_Vision's default_vtab_processed.yml, lr_wd_vtab_processed.yml, method/*.yml."""
    info = _plan("--preset", "petl_vision_vtab1k")
    assert info["protocol"] == {
        "epochs": 100, "batch_size": 64, "optimizer": "AdamW", "lr_schedule": "epoch",
        "warmup_epochs": 10.0, "warmup_lr_init": 1e-6, "lr_min": 1e-5, "drop_path": 0.1,
        "normalize": False, "weight_decay_on": "all", "early_stopping": False,
        "final": {"seeds": 1, "epochs": 100},
    }  # fmt: skip
    assert info["backbone"] == "vit_b16_in21k" and info["tasks"] == 19
    assert info["studies"] == 19 * 16 and info["search"]["space"] == "published_grid"
    trials = {r["study"].split(":")[1]: r["trials"] for r in info["per_study"]}
    # lr x wd (4) times each method's own grid
    assert trials["linear"] == trials["full"] == trials["bitfit"] == 4
    assert trials["lora"] == 16 and trials["vpt_shallow"] == 20 and trials["convpass"] == 80
    assert trials["fact_tk"] == 60 and trials["adaptformer"] == 36
    assert info["trial_epochs"]["tune_max"] == info["trial_epochs"]["tune_expected"]
    assert info["trial_epochs"]["tune_max"] == 19 * 100 * sum(trials.values())
    assert all("drop_path" not in r["space"] for r in info["per_study"])  # fixed by protocol


@pytest.mark.parametrize("name", STUDY_PRESETS)
def test_each_study_has_a_tpe_asha_variant_that_changes_only_the_search(name):
    base, variant = preset_data(name), preset_data(f"{name}_tpe_asha")
    for data in (base, variant):
        data.pop("name")
        data.pop("tune")
        data["search"].pop("space")
        for key in ("prior", "prior_top"):  # the search's evidence (bench/replay_strategies)
            data["search"].pop(key, None)
    assert variant == base
    grid, tpe = load_config(None, preset=name), load_config(None, preset=f"{name}_tpe_asha")
    assert (tpe.tune.max_epochs, tpe.final_epochs) == (grid.tune.max_epochs, grid.final_epochs)
    assert tpe.tune.early_stopping and not grid.tune.early_stopping
    assert tpe.search.space == "optuna" and grid.search.space == "published_grid"
    cheap, full = _plan("--preset", f"{name}_tpe_asha"), _plan("--preset", name)
    assert cheap["trial_epochs"]["tune_expected"] < full["trial_epochs"]["tune_expected"]


def test_every_listed_preset_validates():
    assert set(STUDY_PRESETS) <= set(list_presets())
    for name, text in list_presets().items():
        assert text, f"{name} has no description"
        load_config(None, preset=name)


def test_a_users_file_is_laid_over_the_preset(tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({
        "name": "mine", "tasks": ["synth/count"], "train": {"batch_size": 32},
    }))  # fmt: skip
    cfg = load_config(own, {"tune.max_epochs": 3, "tune.grace_period": 3}, "petl_vision_vtab1k")
    assert (cfg.name, cfg.tasks, cfg.train.batch_size) == ("mine", ["synth/count"], 32)
    assert cfg.train.lr_min == 1e-5 and cfg.train.drop_path == 0.1  # the rest: the study's
    assert cfg.tune.max_epochs == 3 and len(cfg.methods) == 16


def test_an_unknown_preset_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown preset 'petl'; valid: .*petl_vision_vtab1k"):
        load_config(None, preset="petl")
    result = runner.invoke(app, ["run", "--preset", "nope", "--no-progress"])
    assert result.exit_code == 2 and "unknown preset" in result.output


def test_spaces_show_expands_the_grid_with_common_keys():
    result = runner.invoke(app, ["spaces", "show", "full", "--json"])
    assert result.exit_code == 0, result.output
    keys = json.loads(result.output)["keys"]
    assert keys == {"lr": [0.001, 0.01], "weight_decay": [0.0001, 0.001]}
    result = runner.invoke(app, ["spaces", "show", "fact_tt", "--json"])
    assert json.loads(result.output)["keys"]["scale"] == [0.01, 0.1, 1.0, 10.0, 100.0]


def test_asha_budget_estimate():
    # 9 trials, rungs at 1 and 3 (eta 3), max 9: 9*1 + 3*(3-1) + 1*(9-3)
    assert asha_epochs(9, 9, 1, 3) == pytest.approx(21)
    assert asha_epochs(4, 10, 10, 2) == 40  # grace == max: no early stopping
    info = _plan("--set", "tune.num_samples=9", "--set", "tune.max_epochs=9",
                 "--set", "tune.grace_period=1", "--set", "tune.reduction_factor=3",
                 "--epoch-seconds", "3600")  # fmt: skip
    per = info["per_study"][0]
    assert per["trials"] == 9 and per["trial_epochs_expected"] == pytest.approx(21)
    finals = info["trial_epochs"]["final"]
    expected_hours = (21 * info["studies"] + finals) * info["device_hours"]["devices_per_trial"]
    assert info["device_hours"]["expected"] == pytest.approx(expected_hours, rel=1e-3)
