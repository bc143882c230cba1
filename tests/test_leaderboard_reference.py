"""Leaderboard rows per (backbone, protocol, method), and published numbers beside ours.

Final runs are planted in temporary SQLite MLflow stores: two backbones (or two protocols)
must give separate rows that are never averaged as seeds, and a reference's numbers (with
their Δ) must appear only where task, method and backbone all match.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import torch

from tuner.leaderboard.build import build, publish
from tuner.leaderboard.collect import load_reference
from tuner.tracking.artifacts import predictions_bytes
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

N = 200
ORIG = "vit_base_patch16_224.orig_in21k"  # the backbone of PETL_Vision's VTAB-1k numbers
AUGREG = "vit_base_patch16_224.augreg_in21k"  # the same network, later (AugReg) weights
MIRROR = Path("/work/.mirror/OSU-MLB+PETL_Vision/repo")


def _predictions(correct: int, num_classes: int = 4) -> bytes:
    labels = torch.arange(N) % num_classes
    wrong = (labels + 1) % num_classes
    preds = torch.where(torch.arange(N) < correct, labels, wrong)
    return predictions_bytes(torch.nn.functional.one_hot(preds, num_classes).float(), labels)


def _plant(uri: str, experiment: str, finals: dict[tuple[str, str], int], **tags: str) -> None:
    """One study (a parent and a 0.5 device-hour trial) and one final run per (task, method)
    holding ``correct`` of N test examples; ``tags`` (backbone, protocol) on every run."""
    tracker = TrackingService(uri, experiment)
    for (task, method), correct in finals.items():
        key, common = f"{task}:{method}", {"task": task, "method": method, **tags}
        tracker.start_run(key, key, {"stage": "tune", **common})
        tracker.start_run(f"{key}/t", "t", {"stage": "tune", **common}, parent=key)
        tracker.log_metrics(f"{key}/t", {"device_hours": 0.5}, 0)
        fkey = f"final/{key}"
        tracker.start_run(fkey, fkey, {"stage": "final", "seed": 1000, **common}, {"lr": 0.01})
        metrics = {
            "test/acc": correct / N,
            "trainable_params": 110,
            "trainable_params_without_head": 100,
            "device_hours": 0.25,
        }
        tracker.log_metrics(fkey, metrics, 1)
        tracker.log_artifact_bytes(fkey, "test_predictions.parquet", _predictions(correct))
        for k in (f"{key}/t", key, fkey):
            tracker.end_run(k)


def _table(markdown: str) -> dict[str, dict[str, str]]:
    """The markdown table as row label → column → cell text."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


# ---------------------------------------------------------------- backbones and protocols


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """Two sweeps of the same tasks and methods on two backbones, merged on one board."""
    root = tmp_path_factory.mktemp("merged")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _plant(
        uri,
        "orig",
        {("synth/objects", "lora"): 180, ("synth/objects", "bitfit"): 120},
        backbone=ORIG,
        protocol="aaaa1111",
    )
    _plant(
        uri,
        "augreg",
        {("synth/objects", "lora"): 100, ("synth/objects", "bitfit"): 160},
        backbone=AUGREG,
        protocol="bbbb2222",
    )
    paths, tracker = build(uri, ["orig", "augreg"], root / "out", "two backbones")
    return uri, paths, tracker


def test_two_backbones_are_separate_rows_never_averaged(merged):
    _, paths, _ = merged
    summary = pd.read_parquet(paths["summary"])
    lora = summary[summary["method"] == "lora"].set_index("backbone")
    assert sorted(lora.index) == sorted([ORIG, AUGREG])
    assert (lora["seeds"] == 1).all()  # one final each, not two "seeds" of one row
    assert lora.loc[ORIG, "test_acc"] == pytest.approx(0.9)
    assert lora.loc[AUGREG, "test_acc"] == pytest.approx(0.5)
    table = _table(paths["markdown"].read_text())
    assert table[f"lora @ {ORIG}"]["synth/objects"] == "**90.0**"
    # best within its own backbone: bitfit wins on augreg, lora's 50.0 is not the mean 70.0
    assert table[f"lora @ {AUGREG}"]["synth/objects"] == "50.0"
    assert table[f"bitfit @ {AUGREG}"]["synth/objects"] == "**80.0**"
    assert "lora" not in table and "70.0" not in paths["markdown"].read_text()
    # tuning cost per row too: one 0.5 h trial each, not 1.0 h per method
    assert table[f"lora @ {ORIG}"]["tune device-h"] == "0.500"
    assert "never averaged" in paths["markdown"].read_text()


def test_merged_board_logs_metrics_and_annotates_studies_per_backbone(merged):
    uri, paths, tracker = merged
    publish(tracker, paths, "orig+augreg")
    (board,) = TrackingService(uri, "orig", create=False).find({"stage": "leaderboard"})
    assert board["metrics"][f"lora/{ORIG}/mean_flat"] == pytest.approx(0.9)
    assert board["metrics"][f"lora/{AUGREG}/mean_flat"] == pytest.approx(0.5)
    studies = TrackingService(uri, "orig", create=False).find({"stage": "tune"})
    parent = next(
        r for r in studies if r["tags"]["method"] == "lora" and PARENT_RUN_TAG not in r["tags"]
    )
    assert parent["metrics"]["test/acc"] == pytest.approx(0.9)


def test_two_protocols_on_one_backbone_name_the_protocol(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _plant(uri, "short", {("synth/objects", "lora"): 120}, backbone=ORIG, protocol="aaaa1111")
    _plant(uri, "long", {("synth/objects", "lora"): 180}, backbone=ORIG, protocol="cccc3333")
    paths, _ = build(uri, ["short", "long"], tmp_path / "out", "two protocols")
    table = _table(paths["markdown"].read_text())
    # each is the best of its own protocol: never one 75.0 from two "seeds"
    assert table[f"lora @ {ORIG} [aaaa1111]"]["synth/objects"] == "**60.0**"
    assert table[f"lora @ {ORIG} [cccc3333]"]["synth/objects"] == "**90.0**"


def test_one_backbone_and_protocol_keeps_plain_method_rows(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _plant(
        uri,
        "one",
        {("synth/objects", "lora"): 180, ("synth/scenes", "lora"): 140},
        backbone=ORIG,
        protocol="aaaa1111",
    )
    paths, _ = build(uri, ["one"], tmp_path / "out", "one backbone")
    text = paths["markdown"].read_text()
    assert set(_table(text)) == {"lora"} and "@" not in text and "never averaged" not in text


def test_protocol_hash_tags_every_run_of_a_sweep():
    from tuner.config import parse_config
    from tuner.sweep.plan import plan
    from tuner.sweep.study import protocol_hash, study_tags

    base = {"name": "p", "tasks": ["synth/count", "synth/objects"], "methods": ["lora", "bitfit"]}
    cfg = parse_config(base)
    tags = [study_tags(cfg, s)["protocol"] for s in plan(cfg)]
    assert set(tags) == {protocol_hash(cfg)} and len(tags[0]) == 8
    assert protocol_hash(parse_config({**base, "tasks": ["synth/count"]})) == tags[0]
    longer = parse_config({**base, "tune": {"max_epochs": 9}})
    other = parse_config({**base, "backbone": AUGREG})
    assert len({tags[0], protocol_hash(longer), protocol_hash(other)}) == 3


# ---------------------------------------------------------------- published references

SMALL_REFERENCE = {
    "name": "tiny_ref",
    "source": {
        "repo": "https://example.org/tiny",
        "commit": "0123456789abcdef",
        "units": "percent",
    },
    "backbone": ORIG,
    "accuracy": {
        "vtab1k/dtd": {"lora": 60.0, "bitfit": 70.0, "full": 50.0},
        "vtab1k/cifar": {"lora": 40.0},  # a task no sweep ran: never shown
    },
}


@pytest.fixture(scope="module")
def referenced(tmp_path_factory):
    """One sweep on the reference's backbone, one on another; a small reference JSON."""
    root = tmp_path_factory.mktemp("ref")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    finals = {
        ("vtab1k/dtd", "lora"): 130,
        ("vtab1k/dtd", "bitfit"): 120,
        ("synth/objects", "lora"): 180,
    }
    _plant(uri, "orig", finals, backbone=ORIG, protocol="aaaa1111")
    _plant(uri, "augreg", {("vtab1k/dtd", "lora"): 190}, backbone=AUGREG, protocol="bbbb2222")
    reference = root / "tiny_ref.json"
    reference.write_text(json.dumps(SMALL_REFERENCE))
    return uri, root, reference


def test_reference_rows_and_deltas_only_where_task_and_backbone_match(referenced):
    uri, root, reference = referenced
    paths, _ = build(uri, ["orig"], root / "one", "with reference", [str(reference)])
    table = _table(paths["markdown"].read_text())
    assert table["lora (tiny_ref)"]["vtab1k/dtd"] == "60.0"
    assert table["Δ lora (ours − tiny_ref)"]["vtab1k/dtd"] == "+5.0"  # 65.0 − 60.0
    assert table["bitfit (tiny_ref)"]["vtab1k/dtd"] == "70.0"
    assert table["Δ bitfit (ours − tiny_ref)"]["vtab1k/dtd"] == "-10.0"  # 60.0 − 70.0
    assert table["lora (tiny_ref)"]["synth/objects"] == "–"  # no published synth number
    # means over the tasks both have (dtd only), not over lora's synth task too
    assert table["lora (tiny_ref)"]["mean (flat)"] == "60.0"
    assert table["Δ lora (ours − tiny_ref)"]["mean (flat)"] == "+5.0"
    assert table["lora"]["mean (flat)"] == "77.5"  # ours unchanged: (65 + 90) / 2
    assert "full (tiny_ref)" not in table and "vtab1k/cifar" not in table["lora"]
    compared = pd.read_parquet(paths["reference"])
    assert sorted(zip(compared["method"], compared["task"], strict=True)) == [
        ("bitfit", "vtab1k/dtd"),
        ("lora", "vtab1k/dtd"),
    ]
    assert compared.set_index("method").loc["lora", "delta"] == pytest.approx(0.05)
    page = paths["html"].read_text()
    assert "lora (tiny_ref)" in page and 'class="ref">60.0<' in page
    assert 'class="up">+5.0<' in page and 'class="down">-10.0<' in page
    assert "https://example.org/tiny@0123456789" in page


def test_reference_skips_rows_on_another_backbone(referenced):
    uri, root, reference = referenced
    paths, _ = build(uri, ["orig", "augreg"], root / "two", "two", [str(reference)])
    table = _table(paths["markdown"].read_text())
    assert table[f"lora @ {ORIG} (tiny_ref)"]["vtab1k/dtd"] == "60.0"
    assert table[f"lora @ {AUGREG}"]["vtab1k/dtd"] == "**95.0**"  # alone on its backbone
    assert not any(label.startswith(f"lora @ {AUGREG} (") for label in table)
    assert not any(AUGREG in label and "Δ" in label for label in table)
    compared = pd.read_parquet(paths["reference"])
    assert set(compared["backbone"]) == {ORIG}


def test_a_preset_matches_the_reference_by_its_timm_name():
    from tuner.backbones import PRESETS
    from tuner.leaderboard.collect import Reference
    from tuner.leaderboard.summarise import compare

    summary = pd.DataFrame(
        {
            "row": ["lora", "bitfit"],
            "task": ["vtab1k/dtd"] * 2,
            "group": ["natural"] * 2,
            "backbone": [PRESETS["clip_vit_b16"], ""],  # a timm name; an untagged run
            "protocol": ["aaaa1111"] * 2,
            "method": ["lora", "bitfit"],
            "test_acc": [0.5, 0.6],
        }
    )
    accuracy = {"vtab1k/dtd": {"lora": 0.4, "bitfit": 0.4}}
    matched = compare(summary, Reference("r", "clip_vit_b16", accuracy))
    assert list(matched["method"]) == ["lora"] and matched["delta"].iloc[0] == pytest.approx(0.1)


def test_cli_reference_option(referenced, tmp_path):
    from typer.testing import CliRunner

    from tuner.cli import app

    uri, _, reference = referenced
    args = ["leaderboard", "--experiment", "orig", "--tracking-uri", uri, "--no-log"]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "cli"), "--reference", str(reference)]
    )
    assert result.exit_code == 0, result.output
    assert "lora (tiny_ref)" in result.output and "+5.0" in result.output
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--reference", "nope"])
    assert bad.exit_code == 2 and "no reference 'nope'" in bad.output


# ---------------------------------------------------------------- the shipped reference

#: Read from PETL_Vision's tune_output/default_vtab/processed_vtab/<task>/<method>/
#: final_result.json (avg_acc) at the commit the shipped JSON records.
PUBLISHED = {
    ("dtd", "lora"): 68.99,
    ("dtd", "full"): 48.24,
    ("svhn", "lora"): 88.16,
    ("svhn", "full"): 88.81,
}


def test_shipped_petl_vision_reference():
    shipped = resources.files("tuner.leaderboard").joinpath("references/petl_vision.json")
    document = json.loads(shipped.read_text())
    assert document["source"]["repo"] == "https://github.com/OSU-MLB/PETL_Vision"
    assert len(document["source"]["commit"]) == 40
    assert document["backbone"] == ORIG
    assert len(document["accuracy"]) == 19 and len(document["task_map"]) == 19
    assert document["method_map"]["ln"] == "layernorm"
    assert document["method_map"]["rand_h_adapter"] == "adapter_houlsby"
    reference = load_reference("petl_vision")
    assert reference.backbone == ORIG and len(reference.accuracy) == 19
    for (task, method), value in PUBLISHED.items():
        assert document["accuracy"][f"vtab1k/{task}"][method] == value
        assert reference.accuracy[f"vtab1k/{task}"][method] == pytest.approx(value / 100)


@pytest.mark.skipif(
    not MIRROR.is_dir() or shutil.which("git") is None, reason="no PETL_Vision mirror here"
)
def test_shipped_numbers_match_the_mirror_at_the_recorded_commit():
    document = json.loads(
        resources.files("tuner.leaderboard").joinpath("references/petl_vision.json").read_text()
    )
    commit, pattern = document["source"]["commit"], document["source"]["path"]
    theirs = {ours: mine for mine, ours in document["method_map"].items()}
    for (task, method), value in PUBLISHED.items():
        path = pattern.format(task=task, method=theirs[method])
        blob = subprocess.run(
            ["git", "-C", str(MIRROR), "show", f"{commit}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert (
            json.loads(blob)["avg_acc"] == value == document["accuracy"][f"vtab1k/{task}"][method]
        )
