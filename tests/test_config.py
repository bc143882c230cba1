"""Sweep configs: the quickstart validates; bad input names the field and the valid values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.config import QUICKSTART, ConfigError, load_config, parse_config

BASE = {"name": "t", "tasks": ["synth/count"], "methods": ["lora"]}


def test_quickstart_is_valid_and_big_enough():
    cfg = load_config(None)
    assert cfg.name == "quickstart" and len(cfg.tasks) >= 3
    assert set(cfg.methods) == {"linear", "full", "bitfit", "lora", "vpt_deep"}
    assert cfg.tune.max_concurrent_trials >= 1 and cfg.experiment == "quickstart"


def test_unknown_method_names_value_and_lists_valid():
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "methods": ["lora", "lorra"]}, "sweep.yaml")
    msg = str(err.value)
    assert "sweep.yaml" in msg and "methods" in msg and "'lorra'" in msg
    assert "valid:" in msg and "vpt_deep" in msg


def test_unknown_task_names_value_and_lists_valid():
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "tasks": ["synth/nope"]})
    assert "tasks" in str(err.value) and "'synth/nope'" in str(err.value)
    assert "synth/count" in str(err.value)


def test_wrong_type_names_the_field_path():
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "tune": {"max_epochs": "many"}})
    assert "tune.max_epochs" in str(err.value) and "'many'" in str(err.value)


def test_typo_in_a_key_is_rejected_not_ignored():
    with pytest.raises(ConfigError, match=r"tune\.num_sample"):
        parse_config({**BASE, "tune": {"num_sample": 3}})


def test_grace_period_cannot_exceed_max_epochs():
    with pytest.raises(ConfigError, match="grace_period"):
        parse_config({**BASE, "tune": {"max_epochs": 2, "grace_period": 3}})


def test_wildcards_expand_in_registry_order():
    cfg = parse_config({**BASE, "methods": ["vpt_*", "linear"], "tasks": ["synth/*"]})
    assert cfg.methods[-1] == "linear" and all(m.startswith("vpt_") for m in cfg.methods[:-1])
    assert len(cfg.tasks) >= 6 and all(t.startswith("synth/") for t in cfg.tasks)


def test_fixed_hyper_parameters_are_checked_against_the_method():
    with pytest.raises(ConfigError, match="rnak"):
        parse_config({**BASE, "search": {"fixed": {"lora": {"rnak": 2}}}})


def test_overrides_and_missing_file(tmp_path: Path):
    cfg = load_config(QUICKSTART, {"tune.num_samples": 2, "name": "other"})
    assert cfg.tune.num_samples == 2 and cfg.name == "other"
    with pytest.raises(ConfigError, match="no such sweep config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_synth_shifts_resolve_under_the_data_root_and_other_names_fail(tmp_path):
    cfg = load_config(None, {"data_root": str(tmp_path)})  # the quickstart ships shifts
    assert cfg.shifts["synth/count"] == {"noise": str(tmp_path / "synth/count/shift_noise.txt")}
    for task, name in (("synth/count", "blur"), ("vtab1k/dtd", "noise")):
        doc = {"name": "x", "tasks": [task], "methods": ["lora"], "shifts": {task: {name: "synth"}}}
        with pytest.raises(ConfigError, match=f"shifts.{task}.{name}: 'synth' names"):
            parse_config(doc)
