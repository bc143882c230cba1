"""Replay tables: loading, validation errors that name file/column/row, canonical matching,
and the shipped PETL_Vision VTAB-1k table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tuner.replay.table import TableError, config_key, load_table


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def good_rows() -> list[dict]:
    return [
        {"task": "t1", "method": "m", "config": json.dumps({"lr": 0.001, "rank": 8}),
         "val_acc": 0.5, "notes": "ignored"},
        {"task": "t1", "method": "m", "config": json.dumps({"lr": 0.01, "rank": 8}),
         "val_acc": 0.7, "notes": "ignored"},
    ]  # fmt: skip


def test_csv_round_trip_and_lookups(tmp_path: Path) -> None:
    table = load_table(write_csv(tmp_path / "t.csv", good_rows()))
    assert table.studies() == [("t1", "m")]
    assert table.configs("t1", "m") == [{"lr": 0.001, "rank": 8}, {"lr": 0.01, "rank": 8}]
    assert table.values("t1", "m") == {"lr": [0.001, 0.01], "rank": [8]}
    # int/float/str spellings of one point are the same configuration
    assert table.curve("t1", "m", {"lr": "1e-2", "rank": "8"}) == [0.7]
    assert table.curve("t1", "m", {"rank": 8.0, "lr": 0.01}) == [0.7]
    assert table.test_acc("t1", "m", {"lr": 0.01, "rank": 8}) is None
    assert table.epoch_s("t1", "m", {"lr": 0.01, "rank": 8}) is None
    assert not table.has_curves
    with pytest.raises(KeyError, match="no configuration"):
        table.curve("t1", "m", {"lr": 0.1, "rank": 8})


def test_canonical_key_ignores_spelling() -> None:
    assert config_key({"a": 1, "b": "True"}) == config_key({"b": True, "a": "1.0"})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_curves_parquet_with_extras(tmp_path: Path) -> None:
    rows = [
        {"task": "t", "method": "m", "config": '{"lr": 0.1}', "epoch": e, "val_acc": v,
         "test_acc": 0.6, "epoch_s": 2.0}
        for e, v in ((2, 0.4), (1, 0.3), (3, 0.5))
    ]  # fmt: skip
    path = tmp_path / "c.parquet"
    pd.DataFrame(rows).to_parquet(path)
    table = load_table(path)
    assert table.has_curves and table.has_test
    assert table.curve("t", "m", {"lr": 0.1}) == [0.3, 0.4, 0.5]  # sorted by epoch
    assert table.test_acc("t", "m", {"lr": "0.1"}) == 0.6
    assert table.epoch_s("t", "m", {"lr": 0.1}) == 2.0


def test_missing_column_named(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "val_acc"} for r in good_rows()]
    path = write_csv(tmp_path / "nocol.csv", rows)
    with pytest.raises(TableError, match=r"nocol\.csv: missing column\(s\) \['val_acc'\]"):
        load_table(path)


def test_val_acc_outside_unit_interval(tmp_path: Path) -> None:
    rows = good_rows()
    rows[1]["val_acc"] = 73.5  # percent, not a fraction
    path = write_csv(tmp_path / "pct.csv", rows)
    with pytest.raises(TableError) as err:
        load_table(path)
    message = str(err.value)
    assert "pct.csv" in message and "row 2" in message and "'val_acc'" in message
    assert "73.5" in message and "[0, 1]" in message


def test_bad_json_config(tmp_path: Path) -> None:
    rows = good_rows()
    rows[0]["config"] = "{'lr': 0.1}"  # a Python literal, not JSON
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(TableError, match=r"bad\.csv: row 1: column 'config': .* is not JSON"):
        load_table(path)


def test_duplicate_configuration_and_unknown_table(tmp_path: Path) -> None:
    rows = good_rows()
    rows[1]["config"] = json.dumps({"rank": 8.0, "lr": "0.001"})  # the first row's point
    with pytest.raises(TableError, match=r"row 2: .* appears twice"):
        load_table(write_csv(tmp_path / "dup.csv", rows))
    with pytest.raises(TableError, match="petl_vision_vtab1k"):
        load_table("no_such_table")


def test_shipped_table_matches_the_study() -> None:
    table = load_table("petl_vision_vtab1k")
    assert len(table.studies()) == 304
    assert sum(len(table.configs(*s)) for s in table.studies()) == 9804
    assert table.meta["source"]["commit"].startswith("245d262")
    assert table.meta["method_map"]["rand_h_adapter"] == "adapter_houlsby"
    assert table.meta["param_map"]["lora"]["lora_bottleneck"] == "rank"
    assert table.values("vtab1k/caltech101", "lora") == {
        "lr": [0.001, 0.01], "rank": [1, 8, 16, 32], "weight_decay": [0.0001, 0.001]
    }  # fmt: skip
    # their tune_summary.csv, first row: lora_bottleneck 1, lr 0.001, wd 0.0001 -> val_top1 97.0
    config = {"rank": 1, "lr": 0.001, "weight_decay": 0.0001}
    assert table.curve("vtab1k/caltech101", "lora", config) == [0.97]
    assert Path(table.source).stat().st_size < 200_000


def test_compressed_csv_with_test_correct(tmp_path: Path) -> None:
    rows = [
        {"task": "t", "method": "m", "config": json.dumps({"lr": lr}), "epoch": e,
         "val_acc": 0.5, "test_acc": 0.5,
         "test_correct": ("0011" if lr == 0.1 else "0101") if e == 2 else None}
        for lr in (0.1, 0.2) for e in (1, 2)
    ]  # fmt: skip
    table = load_table(write_csv(tmp_path / "c.csv.gz", rows))  # read as gzip, bits as text
    assert table.test_correct("t", "m", {"lr": 0.1}).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert table.test_correct("t", "m", {"lr": 0.2}).tolist() == [0.0, 1.0, 0.0, 1.0]
    rows[1]["test_correct"] = "01x1"
    with pytest.raises(TableError, match=r"row 2: column 'test_correct': '01x1' is not a str"):
        load_table(write_csv(tmp_path / "x.csv.gz", rows))
    rows[1]["test_correct"] = "011"  # another test set than the study's other configuration
    with pytest.raises(TableError, match=r"row 4: column 'test_correct': 4 test examples, but"):
        load_table(write_csv(tmp_path / "n.csv.gz", rows))
    with pytest.raises(TableError, match=r"c\.json\.gz: a replay table is \.csv, \.tsv \(eit"):
        load_table(write_csv(tmp_path / "c.json.gz", rows))
