"""Typed method configs: one declaration read by the sweep check, ``--set``, ``params``, the
search-space loader and ``petl-sweep methods``; a bad value names method, field, value and
bound wherever it comes from."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tuner import methods
from tuner.cli import app
from tuner.config import ConfigError, load_config, parse_config
from tuner.methods.describe import describe_methods
from tuner.sweep.spaces import load_space

BASE = {"name": "t", "tasks": ["synth/count"], "methods": ["lora"]}


@pytest.mark.parametrize(
    "method, hp, message",
    [
        ("lora", {"rank": 0}, "rank=0: Input should be greater than or equal to 1"),
        ("lora", {"dropout": 1.0}, "dropout=1.0: Input should be less than 1"),
        ("convpass", {"dropout": -0.1}, "dropout=-0.1: Input should be greater than or equal to 0"),
        ("repadapter", {"bottleneck": 5}, "bottleneck=5: Input should be a multiple of 2"),
        ("vpt_deep", {"prompt_dropout": 2}, "prompt_dropout=2: Input should be less than 1"),
        ("fact_tk", {"mlp_layout": "mixed"}, "mlp_layout='mixed': Input should be 'per_slice'"),
        ("spt_lora", {"budget": 1.5}, "budget=1.5: Input should be less than or equal to 1"),
        ("lora", {"lr": -1e-3}, "lr=-0.001: Input should be greater than 0"),
        ("lora", {"lr": float("nan")}, "lr=nan: Input should be a finite number"),
        ("full", {"weight_decay": -1}, "weight_decay=-1: Input should be greater than or equal"),
    ],
)
def test_a_bad_value_names_method_field_value_and_bound(method, hp, message):
    with pytest.raises(ValueError) as err:
        methods.get(method, **hp)
    assert str(err.value).startswith(f"method {method!r}: ") and message in str(err.value)


def test_values_are_coerced_and_frozen():
    lora = methods.get("lora", rank="16", dropout=np.float64(0.2))
    assert lora.hp == {"rank": 16, "dropout": 0.2, "init": "lora_kaiming"}
    assert (
        methods.get("convpass", xavier_init=np.bool_(True), bottleneck=np.int64(4)).hp["bottleneck"]
        == 4
    )
    with pytest.raises(ValueError, match="frozen"):
        lora.config.rank = 4  # type: ignore[misc]
    # what a run records rebuilds the same method
    assert methods.get("lora", **lora.hp).hp == lora.hp


def test_sweep_file_and_set_refuse_bad_fixed_values():
    with pytest.raises(ConfigError, match=r"search\.fixed\.lora: method 'lora': rank=0"):
        parse_config({**BASE, "search": {"fixed": {"lora": {"rank": 0}}}})
    with pytest.raises(ConfigError, match=r"lr=nan: Input should be a finite number"):
        parse_config({**BASE, "search": {"fixed": {"lora": {"lr": float("nan")}}}})
    with pytest.raises(ConfigError, match=r"unknown method 'lorra'"):
        parse_config({**BASE, "search": {"fixed": {"lorra": {"rank": 2}}}})
    with pytest.raises(
        ConfigError, match=r"search\.fixed\.vpt_shallow: method 'vpt_shallow': prompt_scope='last'"
    ):
        load_config(None, {"search.fixed.vpt_shallow.prompt_scope": "last"})


def test_a_preset_fixes_options_of_methods_a_file_leaves_out():
    cfg = load_config(None, {"methods": ["lora"]}, "petl_vision_vtab1k")
    assert cfg.methods == ["lora"] and cfg.search.fixed["lora"] == {"init": "trunc_normal"}


def test_search_spaces_are_checked_against_the_fields_bounds(tmp_path):
    (tmp_path / "common.yaml").write_text("published_grid:\n  lr: [0.001, -0.01]\n")
    (tmp_path / "lora.yaml").write_text("published_grid:\n  rank: [8]\n")
    with pytest.raises(ValueError, match=r"common.yaml: published_grid.lr: .*lr=-0.01"):
        load_space("lora", "published_grid", tmp_path)
    (tmp_path / "common.yaml").write_text("optuna: {}\n")
    (tmp_path / "lora.yaml").write_text("optuna:\n  dropout: {uniform: [0.0, 1.5]}\n")
    with pytest.raises(ValueError, match=r"optuna.dropout: method 'lora': dropout=1.5"):
        load_space("lora", "optuna", tmp_path)
    (tmp_path / "lora.yaml").write_text("optuna:\n  rank: {int: [0, 8]}\n")
    with pytest.raises(ValueError, match=r"rank=0: Input should be greater"):
        load_space("lora", "optuna", tmp_path)


def test_the_shipped_spaces_and_presets_pass_their_own_checks():
    for name in methods.list_methods():
        load_space(name, "optuna")
        load_space(name, "published_grid")
    for preset in ("petl_vision_vtab1k", "petl_vision_vtab1k_tpe_asha", "many_shot"):
        load_config(None, {}, preset)


def test_describe_reads_the_typed_fields():
    described = {m["name"]: m["hparams"] for m in describe_methods()}
    assert described["lora"]["rank"]["bounds"] == "≥ 1"
    assert described["lora"]["init"]["choices"] == ["lora_kaiming", "trunc_normal"]
    assert described["vpt_shallow"]["prompt_scope"]["default"] == "all_blocks"
    assert all(f["help"] for fields in described.values() for f in fields.values())


def test_params_cli_names_the_bound():
    result = CliRunner().invoke(app, ["params", "--method", "lora", "--set", "rank=0"])
    assert result.exit_code != 0 and "rank=0: Input should be greater than or equal to 1" in (
        result.output
    )
