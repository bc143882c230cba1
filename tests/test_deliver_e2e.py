"""Delivery on one small real sweep: exports that plain timm loads, registered champions that
MLflow loads and serves, the alias rule, and the CLI's answers to bad input.

The sweep is the session's ``mini_sweep`` (``tests/conftest.py``: 2 synth tasks × linear +
lora, 2 final seeds, shared with ``test_e2e_sweep``), run through ``run_pipeline``, which
registers the champions at its end. Every check
compares against what the final runs stored in MLflow (``test_predictions.parquet``), never
against numbers written here. Fresh processes are real subprocesses: one imports only timm
and torch, one only MLflow's pyfunc loader; the REST check starts ``mlflow models serve``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import MINI_TASKS, free_port
from tuner.cli import app
from tuner.deliver.champion import select
from tuner.deliver.export import project_version
from tuner.deliver.register import (
    ALIAS,
    model_name,
    open_experiment,
    register_candidate,
    sweep_candidates,
)
from tuner.tracking import registry
from tuner.tracking.artifacts import read_predictions
from tuner.tracking.names import PARENT_RUN_TAG

TASKS = MINI_TASKS
SERVED, ALIASED = TASKS  # the alias test moves the alias of its own task only
runner = CliRunner()


@pytest.fixture(scope="module")
def sweep(mini_sweep):
    """The session's mini sweep: its cfg and what its run printed."""
    cfg, _, _, console = mini_sweep
    return cfg, console


def _cli(cfg, *args):
    return runner.invoke(app, [*args, "--tracking-uri", cfg.tracking_uri])


def _split(cfg, task):
    path = Path(cfg.data_root) / task / "test.txt"
    return path, [path.parent / line.split()[0] for line in path.read_text().splitlines()]


def _stored(cfg, run_id):
    """A final run's stored test (logits, labels)."""
    tracker = open_experiment(cfg.tracking_uri, cfg.experiment)
    with tempfile.TemporaryDirectory() as tmp:
        return read_predictions(tracker.download(run_id, "test_predictions.parquet", Path(tmp)))


def _chosen(cfg, task, method=None):
    tracker = open_experiment(cfg.tracking_uri, cfg.experiment)
    found, runs = sweep_candidates(tracker)
    return tracker, select(found, task, method)[0], found, runs


def _fresh(script: str, *args, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


TIMM_ONLY = """
import json, sys
from pathlib import Path
import timm, torch
from PIL import Image
folder, split, dest = map(Path, sys.argv[1:])
cfg = json.loads((folder / "config.json").read_text())
model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
    pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=str(folder / "model.safetensors")),
    **cfg["model_kwargs"]).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
paths = [split.parent / l.split()[0] for l in split.read_text().splitlines() if l.strip()]
with torch.no_grad():
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    logits = torch.cat([model(x[i:i + 250]) for i in range(0, len(x), 250)])
ours = sorted({m.split(".")[0] for m in sys.modules} & {"tuner", "mlflow"})
assert not ours, f"imported {ours}"
torch.save(logits, dest)
"""


def test_merged_export_predicts_like_the_final_run_with_plain_timm(sweep, tmp_path):
    cfg, _ = sweep
    _, lora, _, _ = _chosen(cfg, SERVED, "lora")
    out = tmp_path / "export"
    result = _cli(cfg, "export", "--experiment", cfg.experiment, "--task", SERVED,
                  "--method", "lora", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"README.md", "config.json", "model.safetensors"}
    config = json.loads((out / "config.json").read_text())
    assert config["plain_timm"] and "merged into the backbone" in config["merged"]
    assert config["architecture"] == "vit_tiny_patch16_224"  # timm's own, not ours
    readme = (out / "README.md").read_text()
    assert "timm.create_model('vit_tiny_patch16_224', pretrained=True" in readme
    split, _ = _split(cfg, SERVED)
    _fresh(TIMM_ONLY, out, split, tmp_path / "logits.pt", cwd=tmp_path)
    logits = torch.load(tmp_path / "logits.pt")
    stored, labels = _stored(cfg, lora.run_id)
    assert len(logits) == len(labels) == 1000
    assert torch.equal(logits.argmax(1), stored.argmax(1))
    assert float((logits - stored).abs().max()) < 1e-4


PYFUNC = """
import sys
import mlflow, pandas as pd
uri, model, split, dest = sys.argv[1:]
mlflow.set_tracking_uri(uri)
loaded = mlflow.pyfunc.load_model(model)
lines = open(split).read().splitlines()
paths = [split.rsplit("/", 1)[0] + "/" + l.split()[0] for l in lines if l.strip()]
loaded.predict(pd.DataFrame({"image": paths})).to_json(dest)
"""


def test_registered_champion_loads_in_a_fresh_process(sweep, tmp_path):
    cfg, _ = sweep
    _, champion, _, _ = _chosen(cfg, SERVED)
    uri = registry.model_uri(model_name(cfg.name, SERVED), ALIAS)
    split, _ = _split(cfg, SERVED)
    _fresh(PYFUNC, cfg.tracking_uri, uri, split, tmp_path / "out.json", cwd=tmp_path)
    out = pd.read_json(tmp_path / "out.json")
    stored, _ = _stored(cfg, champion.run_id)
    assert out["label"].tolist() == stored.argmax(1).tolist()
    prob = stored.softmax(1).max(1).values
    assert float((torch.tensor(out["prob"].to_numpy()) - prob).abs().max()) < 1e-4


def _stop(server: subprocess.Popen) -> None:
    """End the server and its workers (its own process group), SIGKILL after 30 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


def test_served_champion_answers_invocations(sweep, tmp_path):
    cfg, _ = sweep
    _, champion, _, _ = _chosen(cfg, SERVED)
    _, paths = _split(cfg, SERVED)
    rows = [[str(p)] for p in paths[:7]]  # seven paths and one encoded image
    rows.append(["data:image/png;base64," + base64.b64encode(paths[7].read_bytes()).decode()])
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [str(mlflow_cli), "models", "serve", "-m",
         registry.model_uri(model_name(cfg.name, SERVED), ALIAS),
         "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1"],
        # the venv's bin first: MLflow execs ``uvicorn`` by name
        env={**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking_uri,
             "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "server not up in 180 s"
            time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
        request = urllib.request.Request(
            f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        _stop(server)
        log.close()
    stored, _ = _stored(cfg, champion.run_id)
    assert [r["label"] for r in answer["predictions"]] == stored[:8].argmax(1).tolist()


def test_sweep_printed_champions_with_their_uris(sweep):
    cfg, console = sweep
    assert "Champions" in console
    for task in TASKS:
        _, champion, _, _ = _chosen(cfg, task)
        line = next(line for line in console.splitlines() if line.strip().startswith(f"{task}:"))
        assert champion.method in line
        assert f"models:/{model_name(cfg.name, task)}@champion" in line


def test_models_lists_the_best_validation_study_per_task(sweep):
    cfg, _ = sweep
    result = _cli(cfg, "models", "--experiment", cfg.experiment, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["task"]: r for r in json.loads(result.output)}
    tracker = open_experiment(cfg.tracking_uri, cfg.experiment)
    studies = [r for r in tracker.find({"stage": "tune"}) if PARENT_RUN_TAG not in r["tags"]]
    for task in TASKS:
        mine = [s for s in studies if s["tags"]["task"] == task]
        best = max(s["metrics"]["best_val_acc"] for s in mine)
        row = rows[task]
        assert row["val_acc"] == pytest.approx(best)
        winners = {s["tags"]["method"] for s in mine if s["metrics"]["best_val_acc"] == best}
        assert row["champion"] in winners
        finals = tracker.find({"stage": "final", "study": f"{task}:{row['champion']}"})
        assert row["seeds"] == len(finals) == 2
        assert row["test_acc"] == pytest.approx(sum(f["metrics"]["test/acc"] for f in finals) / 2)
        assert row["total_params"] > row["trainable_params"] > 0
        assert row["model_uri"] == f"models:/{model_name(cfg.name, task)}@champion"
        assert row["alias_on_this_sweep"]


def test_register_is_idempotent_and_all_gives_every_final_run_a_model(sweep):
    cfg, _ = sweep
    before = {t: registry.versions(cfg.tracking_uri, model_name(cfg.name, t)) for t in TASKS}
    result = _cli(cfg, "register", "--experiment", cfg.experiment, "--all")
    assert result.exit_code == 0, result.output
    assert result.output.count("existing") == len(TASKS)
    for task in TASKS:
        assert registry.versions(cfg.tracking_uri, model_name(cfg.name, task)) == before[task]
    tracker = open_experiment(cfg.tracking_uri, cfg.experiment)
    finals = tracker.find({"stage": "final"})
    assert len(finals) == 8
    assert all(registry.packaged_model(cfg.tracking_uri, r["run_id"]) for r in finals)


def test_predict_cli_skips_bad_files_and_reads_split_files(sweep, tmp_path):
    cfg, _ = sweep
    _, champion, _, _ = _chosen(cfg, SERVED)
    uri = registry.model_uri(model_name(cfg.name, SERVED), ALIAS)
    split, paths = _split(cfg, SERVED)
    result = _cli(cfg, "predict", uri, str(split), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    stored, labels = _stored(cfg, champion.run_id)
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["label"].tolist() == stored.argmax(1).tolist()
    assert table["true_label"].tolist() == labels.tolist()
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "ok.png").write_bytes(paths[0].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.png").write_bytes(paths[1].read_bytes()[:50])
    from PIL import Image

    Image.open(paths[2]).convert("L").resize((45, 61)).save(folder / "gray.png")
    result = _cli(cfg, "predict", uri, str(folder))
    assert result.exit_code == 0, result.output
    text = result.output.replace("\n", " ")
    assert "2 images predicted, 2 skipped" in text
    assert "skipped " + str(folder / "cut.png") in text and str(folder / "notes.txt") in text
    assert str(folder / "gray.png") + "," in text  # grayscale, 45×61: converted and resized
    strict = _cli(cfg, "predict", uri, str(folder), "--strict")
    assert strict.exit_code == 1


def test_predict_refuses_a_model_of_another_format(sweep, tmp_path):
    cfg, _ = sweep
    out = tmp_path / "export"
    assert _cli(cfg, "export", "--experiment", cfg.experiment, "--task", ALIASED,
                "--out", str(out)).exit_code == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "format": 0,
                                                  "petl_sweep_version": "0.0.1"}))  # fmt: skip
    _, paths = _split(cfg, ALIASED)
    result = _cli(cfg, "predict", str(out), str(paths[0]))
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich wraps at 80 columns
    assert "petl-sweep 0.0.1" in text and f"installed petl-sweep {project_version()}" in text


def test_bad_input_is_one_line_and_exit_2(sweep):
    cfg, _ = sweep
    from tuner.tracking.client import TrackingService

    TrackingService(cfg.tracking_uri, "empty")
    cases = {
        ("models", "--experiment", "nope"): "no MLflow experiment 'nope'",
        ("models", "--experiment", "empty"): "no finished final runs",
        ("export", "--experiment", cfg.experiment, "--task", "synth/nope", "--out", "x"):
            "unknown task 'synth/nope'",
        ("export", "--experiment", cfg.experiment, "--task", SERVED, "--method", "nope",
         "--out", "x"): "unknown method 'nope'",
        ("export", "--experiment", cfg.experiment, "--task", SERVED, "--method", "vpt_deep",
         "--out", "x"): "'vpt_deep' has no final runs",
    }  # fmt: skip
    for args, message in cases.items():
        result = _cli(cfg, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output


def _second_seed(runs, c):
    """The run id of the study's other final run (the sweep has two seeds)."""
    same = [r["run_id"] for r in runs.values() if r["tags"]["study"] == c.study]
    return next(r for r in same if r != c.run_id)


def test_alias_moves_only_on_better_validation(sweep):
    cfg, _ = sweep
    tracker, champion, found, runs = _chosen(cfg, ALIASED)
    name = model_name(cfg.name, ALIASED)
    first = registry.alias_version(cfg.tracking_uri, name, ALIAS)
    assert first is not None and first.run_id == champion.run_id
    registry.set_alias(cfg.tracking_uri, name, "prod", first.version)  # the user's own
    other = next(c for c in found if c.task == ALIASED and c.method != champion.method)
    seed2 = _second_seed(runs, champion)
    other2 = _second_seed(runs, other)
    # a later sweep's champions, standing in with this sweep's other final runs
    worse = replace(other, val_acc=champion.val_acc - 0.05)
    elsewhere = replace(other, run_id=other2, val_acc=1.0, protocol="another")
    better = replace(champion, run_id=seed2, val_acc=champion.val_acc + 0.05)
    for later in (worse, elsewhere):
        done = register_candidate(tracker, later, runs)
        assert done.created and not done.moved and done.version != first.version
        assert registry.alias_version(cfg.tracking_uri, name, ALIAS).version == first.version
    done = register_candidate(tracker, better, runs)
    assert done.created and done.moved
    held = registry.alias_version(cfg.tracking_uri, name, ALIAS)
    assert held.version == done.version and held.run_id == seed2
    assert registry.alias_version(cfg.tracking_uri, name, "prod").version == first.version
    again = register_candidate(tracker, better, runs)
    assert (again.version, again.created, again.moved) == (done.version, False, False)
