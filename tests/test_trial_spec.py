"""``TrialSpec`` carries the sweep's own ``TrainSettings``: one schema from the sweep file to
the run, to MLflow's ``config.json`` and back (including stores of earlier versions, whose
``config.json`` has the recipe's fields flat), and the reuse hashes do not move."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from tuner.analysis.models import final_spec
from tuner.analysis.run import AnalysisError
from tuner.config import parse_config
from tuner.sweep.plan import StudySpec, study_hash
from tuner.sweep.specs import trial_spec
from tuner.sweep.study import protocol_hash
from tuner.training.settings import TrainSettings
from tuner.training.spec import SpecError, TrialSpec

BASE = {"name": "t", "tasks": ["synth/dsprites_loc"], "methods": ["linear"]}
#: the seed studies' recipe
STUDY_TRAIN = {
    "lr_schedule": "epoch", "weight_decay_on": "all", "drop_path": 0.1, "warmup_lr_init": 1e-6,
    "lr_min": 1e-5, "normalize": False, "batch_size": 32,
}  # fmt: skip

#: ``config.json`` of a final run as versions before ``spec.train`` wrote it (asdict, flat)
FLAT = {
    "task": "synth/count", "method": "lora", "hp": {"lr": 0.003, "rank": 4},
    "backbone": "vit_petl_tiny_patch8_32", "pretrained": False, "weights": None,
    "normalize": False, "stage": "final", "epochs": 5, "batch_size": 32, "warmup_epochs": 2.0,
    "warmup_lr_init": 1e-06, "lr_min": 1e-05, "lr_schedule": "epoch",
    "weight_decay_on": "all", "drop_path": 0.1, "label_smoothing": 0.0, "seed": 1000,
    "data_root": "/data", "threads": 2, "shifts": {"blur": "/s/blur.txt"},
    "prepare_seed": 0, "prepared_uri": None,
}  # fmt: skip


def test_trial_spec_carries_the_config_section_itself():
    cfg = parse_config({**BASE, "train": STUDY_TRAIN})
    spec = trial_spec(cfg, "synth/dsprites_loc", "linear", {"lr": 1e-3}, "final", 1000)
    assert spec.train is cfg.train
    assert spec.train.lr_schedule == "epoch" and spec.train.batch_size == 32
    assert spec.common("drop_path") == 0.1  # the protocol's, not the hp default
    assert spec.with_hp({"drop_path": 0.2}).common("drop_path") == 0.2
    with pytest.raises(ValueError, match="frozen"):  # shared by config and every spec
        spec.train.batch_size = 8  # type: ignore[misc]


def test_round_trip_through_json_keeps_every_field_and_literal():
    train = TrainSettings(**STUDY_TRAIN, label_smoothing=0.1, pretrained=False)
    spec = TrialSpec(task="synth/count", method="lora", hp={"lr": 3e-3}, stage="final",
                     epochs=5, train=train, seed=7, shifts={"blur": "/s"})  # fmt: skip
    stored = json.loads(json.dumps(spec.to_dict()))
    assert stored["train"]["lr_schedule"] == "epoch" and "batch_size" not in stored
    back = TrialSpec.from_dict(stored)
    assert back == spec and isinstance(back.train, TrainSettings)
    assert back.train.weight_decay_on == "all" and back.train.pretrained is False
    assert pickle.loads(pickle.dumps(spec)) == spec  # what Ray sends to a worker


def test_the_flat_layout_of_earlier_stores_is_read():
    spec = TrialSpec.from_dict({**FLAT, "some_later_field": 1})  # unknown top-level: ignored
    assert spec.train == TrainSettings(
        batch_size=32, warmup_epochs=2.0, warmup_lr_init=1e-6, lr_min=1e-5,
        lr_schedule="epoch", weight_decay_on="all", drop_path=0.1, pretrained=False,
        normalize=False,
    )  # fmt: skip
    assert (spec.task, spec.stage, spec.epochs, spec.seed) == ("synth/count", "final", 5, 1000)
    assert spec.hp == {"lr": 0.003, "rank": 4} and spec.shifts == {"blur": "/s/blur.txt"}
    assert TrialSpec.from_dict(spec.to_dict()) == spec  # rewritten in the new layout
    oldest = TrialSpec.from_dict({"task": "synth/count", "method": "linear", "stage": "final"})
    assert oldest.train == TrainSettings()  # fields a store predates take their defaults


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"train": {"lr_schedule": "cosine"}}, "train.lr_schedule"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"momentum": 0.9}}, "train.momentum"),
        ({"train": [1, 2]}, "train"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),  # the flat layout: its own key
        ({"weight_decay_on": "some"}, "weight_decay_on"),
        ({"stage": "eval"}, "stage"),
    ],
)
def test_a_bad_value_names_its_field(change: dict[str, Any], field: str):
    data = {**FLAT, **change}
    with pytest.raises(SpecError, match=rf"^{field}: "):
        TrialSpec.from_dict(data)


def test_a_missing_field_is_named():
    with pytest.raises(SpecError, match=r"^method: missing"):
        TrialSpec.from_dict({"task": "synth/count"})


class _Store:
    """The one tracker call ``final_spec`` makes."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def load_dict(self, run_id: str, path: str) -> dict[str, Any]:
        assert path == "config.json"
        return json.loads(json.dumps(self.config))


RUN = {"run_id": "r1", "tags": {"task": "synth/count", "method": "lora"}}


def test_final_spec_reads_old_and_new_stores_and_names_a_bad_field():
    old = final_spec(_Store(FLAT), RUN, data_root="/elsewhere")  # type: ignore[arg-type]
    assert old.train.lr_schedule == "epoch" and old.data_root == "/elsewhere"
    assert old.shifts == {} and old.threads is None
    new = final_spec(_Store(old.to_dict()), RUN, shifts=True)  # type: ignore[arg-type]
    assert new.train == old.train and new.data_root == "/elsewhere"
    bad = {**old.to_dict(), "train": {**old.train.model_dump(), "normalize": "maybe"}}
    with pytest.raises(AnalysisError, match=r"run r1 \(synth/count, lora\).*train\.normalize"):
        final_spec(_Store(bad), RUN)  # type: ignore[arg-type]


def test_reuse_hashes_are_those_of_earlier_versions():
    """The values main computed before ``TrainSettings`` moved: a changed hash would make
    ``--resume`` of an old sweep re-run its studies."""
    study = StudySpec(task="synth/dsprites_loc", method="linear", seed=3, space={},
                      dataset={"digest": "abc"})  # fmt: skip
    plain, studies = parse_config(BASE), parse_config({**BASE, "train": STUDY_TRAIN})
    assert (study_hash(plain, study), protocol_hash(plain)) == ("63f40795bf56ef8dcf80", "95aff722")
    assert (study_hash(studies, study), protocol_hash(studies)) == (
        "f4d3fbb91e4490726d94",
        "25de07af",
    )
    # recording test curves changes what trials log, never a result: same hashes
    recorded = parse_config({**BASE, "train": {"record_test": True}})
    assert (study_hash(recorded, study), protocol_hash(recorded)) == (
        "63f40795bf56ef8dcf80",
        "95aff722",
    )
    assert recorded.train.record_test and not plain.train.record_test
