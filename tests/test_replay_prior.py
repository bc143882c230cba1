"""``search.prior``: the warm points a sweep's study gets from a replay table, leave-one-task-
out, fitted to the sweep's (continuous) space, ahead of the engine's own warm start."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from tuner.replay.prior import method_defaults, prior_points, with_prior
from tuner.replay.table import from_records, load_table
from tuner.search_settings import SearchSettings
from tuner.sweep.spaces import Domain, load_space


def rows() -> list[dict]:
    """rank 8 / lr 0.01 is near-best on t1 and t2; rank 4 / lr 0.001 only on t3."""
    acc = {"t1": {(8, 0.01): 0.80, (4, 0.001): 0.60}, "t2": {(8, 0.01): 0.70, (4, 0.001): 0.50},
           "t3": {(8, 0.01): 0.40, (4, 0.001): 0.90}}  # fmt: skip
    return [
        {"task": t, "method": "lora", "config": json.dumps({"rank": r, "lr": lr}), "val_acc": v}
        for t, by in acc.items()
        for (r, lr), v in by.items()
    ]


SPACE = {"rank": Domain("choice", (1, 4, 8)), "lr": Domain("loguniform", (1e-4, 3e-2)),
         "drop_path": Domain("uniform", (0.0, 0.2))}  # fmt: skip


def test_prior_order_skips_own_task_and_fills() -> None:
    table = from_records(rows(), "p")
    # for t3: t1 and t2 (both prefer rank 8) vote; t3's own preference never counts
    points = prior_points(table, "lora", "t3", SPACE, 5, fill={"drop_path": 0.1})
    assert points == [{"rank": 8, "lr": 0.01, "drop_path": 0.1},
                      {"rank": 4, "lr": 0.001, "drop_path": 0.1}]  # fmt: skip
    # for t1: t2 votes rank 8, t3 votes rank 4: a tie on hits, broken by mean normalised acc
    assert prior_points(table, "lora", "t1", SPACE, 1, fill={"drop_path": 0.1})[0]["rank"] == 8
    # without a value for drop_path a point cannot be expressed in the space: none
    assert prior_points(table, "lora", "t3", SPACE, 5) == []
    # a value outside the space's domain (rank 4 not a choice) drops that point only
    narrow = {**SPACE, "rank": Domain("choice", (8, 16))}
    assert len(prior_points(table, "lora", "t3", narrow, 5, fill={"drop_path": 0.0})) == 1


def test_with_prior_as_a_sweep_uses_it(tmp_path: Path) -> None:
    path = tmp_path / "prior.csv"
    pd.DataFrame(rows()).to_csv(path, index=False)
    cfg = SimpleNamespace(search=SearchSettings(prior=str(path), prior_top=2),
                          train=SimpleNamespace(drop_path=0.1))  # fmt: skip
    engine = [({"rank": 8, "lr": 0.01, "drop_path": 0.1}, "t1"), ({"rank": 1, "lr": 0.02,
              "drop_path": 0.05}, "t2")]  # fmt: skip
    warm = with_prior(cfg, "t3", "lora", SPACE, engine)
    assert [source for _, source in warm] == ["prior:prior", "prior:prior", "t2"]
    assert warm[0][0] == {"rank": 8, "lr": 0.01, "drop_path": 0.1}
    assert with_prior(cfg, "t3", "vpt_deep", SPACE, engine) == engine  # not in the table


def test_shipped_prior_fits_the_preset_spaces() -> None:
    """Every method of the shipped table gets prior points in its optuna space (the
    *_tpe_asha presets search it) once the fixed drop path and the method's defaults fill the
    keys the table never varied (VPT's prompt_dropout); a point outside
    a space (full fine-tuning's lr range stops below the grid's 1e-2) is left out."""
    table = load_table("petl_vision_vtab1k")
    for method in sorted({m for _, m in table.studies()}):
        space = load_space(method, "optuna")
        fill = {**method_defaults(method), "drop_path": 0.1}
        points = prior_points(table, method, "vtab1k/dtd", space, 4, fill=fill)
        assert points, method
        if method == "full":
            assert all(p["lr"] <= space["lr"].args[1] for p in points)
        else:
            assert len(points) == 4, method


def test_unknown_prior_table_is_a_config_error() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"no replay table 'nope'.*petl_vision_vtab1k"):
        SearchSettings(prior="nope")


def test_prior_skips_a_twin_of_an_earlier_point() -> None:
    """Weight decay 1e-4 and 1e-3 gave the very same accuracy on every other task (a setting
    that moved nothing): the twin is skipped, the next distinct configuration comes second.
    On the study's own task the twin differs, but that task is never evidence."""
    acc = {"t1": {(8, 1e-4): 0.80, (8, 1e-3): 0.80, (4, 1e-4): 0.78},
           "t2": {(8, 1e-4): 0.70, (8, 1e-3): 0.70, (4, 1e-4): 0.69},
           "t3": {(8, 1e-4): 0.40, (8, 1e-3): 0.45, (4, 1e-4): 0.44}}  # fmt: skip
    table = from_records(
        [{"task": t, "method": "lora", "config": json.dumps({"rank": r, "weight_decay": wd}),
          "val_acc": v} for t, by in acc.items() for (r, wd), v in by.items()],
        "twins",
    )  # fmt: skip
    space = {"rank": Domain("choice", (4, 8)), "weight_decay": Domain("choice", (1e-4, 1e-3))}
    assert prior_points(table, "lora", "t3", space, 2) == [
        {"rank": 8, "weight_decay": 1e-4},
        {"rank": 4, "weight_decay": 1e-4},
    ]
    # for t1, t3 tells the twins apart: all three are distinct points
    assert len(prior_points(table, "lora", "t1", space, 3)) == 3
