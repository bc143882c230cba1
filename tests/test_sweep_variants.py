"""A second end-to-end sweep through the paths the first one does not take.

A user task in the VTAB-1k layout written by ``petl-sweep data synth`` (``folder:<path>``),
an evaluation-only shift set attached to it, and SPT beside a plain method: the study's
sensitivity pass runs once, is logged as an artifact, and every trial reuses it; the final
run carries the allocation table and plot.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import parse_config
from tuner.sweep.pipeline import run_pipeline
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

SAMPLES = 2


def _inverted_shift(task: Path, out: Path) -> Path:
    """The task's test images with inverted colours, as a ``<path> <label>`` list file."""
    out.mkdir(parents=True)
    lines = []
    for i, line in enumerate((task / "test.txt").read_text().splitlines()[:100]):
        rel, label = line.rsplit(maxsplit=1)
        image = np.asarray(Image.open(task / rel).convert("RGB"))
        Image.fromarray(255 - image).save(out / f"{i}.png")
        lines.append(f"{i}.png {label}")
    (out / "inverted.txt").write_text("\n".join(lines) + "\n")
    return out / "inverted.txt"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    result = CliRunner().invoke(
        app, ["data", "synth", "--out", str(root / "mine"), "--task", "count"]
    )
    assert result.exit_code == 0, result.output
    task = f"folder:{root / 'mine' / 'count'}"
    shift = _inverted_shift(root / "mine" / "count", root / "shift")
    cfg = parse_config(
        {
            "name": "variants",
            "tasks": [task],
            "methods": ["linear", "spt_lora"],
            "data_root": str(root / "data"),
            "out_dir": str(root / "results"),
            "tune": {"num_samples": SAMPLES, "max_epochs": 2, "grace_period": 1},
            "final": {"seeds": 1},
            "shifts": {task: {"inverted": str(shift)}},
            "ray": {"num_cpus": 2},
        }
    )
    with open(root / "console.txt", "w") as log:
        run_pipeline(cfg, Console(file=log, width=200), live=False)
    ray.shutdown()
    tracker = TrackingService(cfg.tracking_uri, cfg.experiment, create=False)
    return cfg, tracker, tracker.search()


def test_a_data_synth_folder_runs_as_a_user_task(sweep):
    cfg, _, runs = sweep
    finals = [r for r in runs if r["tags"].get("stage") == "final"]
    assert sorted(r["tags"]["method"] for r in finals) == ["linear", "spt_lora"]
    assert all(r["tags"]["task"] == cfg.tasks[0] for r in finals)
    assert all(0.0 <= r["metrics"]["test/acc"] <= 1.0 for r in finals)


def test_shift_sets_are_evaluated_on_final_runs_only(sweep):
    _, _, runs = sweep
    for run in runs:
        has_shift = "shift/inverted/acc" in run["metrics"]
        assert has_shift == (run["tags"].get("stage") == "final"), run["tags"]


def test_spt_study_computes_sensitivity_once_and_every_trial_reuses_it(sweep):
    _, tracker, runs = sweep
    study = next(
        r
        for r in runs
        if r["tags"].get("method") == "spt_lora"
        and r["tags"].get("stage") == "tune"
        and PARENT_RUN_TAG not in r["tags"]
    )
    assert study["tags"]["sensitivity.source"] == "computed"
    key = study["params"]["sensitivity.key"]
    artifacts = [a.path for a in tracker.client.list_artifacts(study["run_id"], "sensitivity")]
    assert artifacts == [f"sensitivity/{key}.safetensors"]
    trials = [r for r in runs if r["tags"].get(PARENT_RUN_TAG) == study["run_id"]]
    assert len(trials) == SAMPLES
    assert all(r["metrics"]["sensitivity_reused"] == 1.0 for r in trials)


def test_spt_final_run_logs_its_allocation(sweep, tmp_path):
    _, tracker, runs = sweep
    final = next(
        r for r in runs if r["tags"].get("stage") == "final" and r["tags"]["method"] == "spt_lora"
    )
    table_path = tracker.download(final["run_id"], "allocation.parquet", tmp_path)
    rows = pq.read_table(table_path).to_pylist()
    assert sum(r["trainable"] for r in rows) == final["metrics"]["spt/realised"]
    cls_token = 96
    assert (
        final["metrics"]["spt/realised"] + cls_token
        == final["metrics"]["trainable_params_without_head"]
    )
    png = Path(tracker.download(final["run_id"], "allocation.png", tmp_path)).read_bytes()
    assert Image.open(io.BytesIO(png)).size[0] > 600
