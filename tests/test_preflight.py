"""Never a silent hang: impossible requests, unknown backbones and unreachable weights.

Resource checks run on node dicts shaped like ``ray.nodes()`` (and once on a real local
Ray); the backbone checks through the real ``petl-sweep run`` and the real hub client,
against a local socket that accepts and never answers (a hub that hangs).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _sweep_helpers import local_ray

from tuner.backbones.hub import WeightsUnavailableError, cached, check_pretrained_weights
from tuner.config import ConfigError, load_config
from tuner.sweep.preflight import (
    PendingTimeout,
    PendingWatch,
    autoscaler_reason,
    check_resources,
    cluster_autoscales,
)

BIN = Path(sys.executable).parent
SMALL = "vit_small_patch16_224"
SMALL_REPO = "timm/vit_small_patch16_224.augreg_in21k_ft_in1k"


def cfg(**resources):
    return load_config(None, {f"resources.{k}": v for k, v in resources.items()})


def node(cpus: float, gpus: float = 0, ip: str = "10.0.0.1", alive: bool = True) -> dict:
    """One ``ray.nodes()`` entry."""
    resources = {"CPU": cpus, "memory": 8e9, f"node:{ip}": 1.0, "object_store_memory": 1e9}
    if gpus:
        resources["GPU"] = gpus
    return {"NodeManagerAddress": ip, "Alive": alive, "Resources": resources}


def test_too_many_cpus_per_trial_is_a_config_error_naming_field_and_largest_node():
    nodes = [node(2, ip="127.0.0.1")]
    with pytest.raises(ConfigError) as err:
        check_resources(cfg(cpus_per_trial=4), nodes)
    message = str(err.value)
    assert message.startswith("resources.cpus_per_trial = 4: each trial asks for 4 CPUs, ")
    assert "the largest node is 127.0.0.1 (2 CPUs, 0 GPUs) of 1 alive" in message
    assert "\n" not in message


def test_a_gpu_on_a_cpu_cluster_names_gpus_per_trial():
    nodes = [
        node(8, ip="10.0.0.1"),
        node(16, ip="10.0.0.2"),
        node(64, 8, ip="10.0.0.9", alive=False),
    ]
    with pytest.raises(ConfigError) as err:
        check_resources(cfg(gpus_per_trial=1), nodes)
    message = str(err.value)
    assert message.startswith("resources.gpus_per_trial = 1: each trial asks for 1 CPUs and 1 GPUs")
    assert "largest node is 10.0.0.2 (16 CPUs, 0 GPUs) of 2 alive" in message  # dead one left out


def test_a_request_each_part_of_which_fits_somewhere_but_never_together():
    nodes = [node(8, ip="10.0.0.1"), node(2, 1, ip="10.0.0.2")]
    assert check_resources(cfg(cpus_per_trial=2, gpus_per_trial=1), nodes) is None
    with pytest.raises(ConfigError) as err:
        check_resources(cfg(cpus_per_trial=4, gpus_per_trial=1), nodes)
    message = str(err.value)
    assert message.startswith("resources.cpus_per_trial = 4, resources.gpus_per_trial = 1: ")
    assert "4 CPUs and 1 GPUs on one node" in message


def test_fractional_gpus_and_plain_resource_dicts_fit():
    assert check_resources(cfg(gpus_per_trial=0.25), [{"CPU": 4.0, "GPU": 1.0}]) is None
    assert check_resources(cfg(), [{"CPU": 1.0}]) is None


def test_autoscaling_cluster_reports_instead_of_failing():
    head = [node(4, ip="10.0.0.1")]  # no GPU node yet: the worker group scales from 0
    said = check_resources(cfg(gpus_per_trial=1, autoscaling=True), head)
    assert said.startswith("waiting for the autoscaler: resources.gpus_per_trial = 1")
    assert "giving up after 1800 s (resources.pending_timeout_s)" in said
    assert check_resources(cfg(gpus_per_trial=1), head, autoscaling=True) == said
    with pytest.raises(ConfigError):
        check_resources(cfg(gpus_per_trial=1, autoscaling=True), head, autoscaling=False)


def test_pending_watch_speaks_every_minute_and_gives_up_with_the_autoscaler_reason():
    config = cfg(gpus_per_trial=1, autoscaling=True, pending_timeout_s=300)
    watch = PendingWatch(config)
    nodes = [node(4)]
    report = {"autoscaler_report": {"pending_launches": {"gpu-worker": 2}, "failed_nodes": [
        ["10.0.0.7", "gpu-worker"]]}}  # fmt: skip
    assert watch.tick(pending=4, running=0, nodes=nodes, report=report, now=1000) is None
    assert watch.tick(pending=4, running=0, nodes=nodes, report=report, now=1030) is None
    line = watch.tick(pending=4, running=0, nodes=nodes, report=report, now=1061)
    assert line.startswith("4 trial(s) pending for 61 s, none running: resources.gpus_per_trial")
    assert line.endswith("autoscaler: launching 2 × gpu-worker; 1 launch(es) failed (gpu-worker)")
    assert watch.tick(pending=4, running=0, nodes=nodes, report=report, now=1100) is None
    assert watch.tick(pending=3, running=1, nodes=nodes, now=1200) is None  # a trial runs: reset
    assert watch.tick(pending=3, running=0, nodes=nodes, now=1250) is None
    with pytest.raises(PendingTimeout, match=r"gave up after resources.pending_timeout_s = 300 s"):
        watch.tick(pending=3, running=0, nodes=nodes, report=report, now=1551)


def test_autoscaler_reason_without_a_report():
    assert autoscaler_reason(None) == "autoscaler: no report yet"
    assert autoscaler_reason({"autoscaler_report": {}}) == "autoscaler: no launch under way"


def test_a_real_local_ray_with_two_cpus_refuses_four_per_trial():
    import ray

    with local_ray(num_cpus=2):
        config = cfg(cpus_per_trial=4)
        assert not cluster_autoscales(config)
        with pytest.raises(ConfigError, match=r"largest node is .* \(2 CPUs, 0 GPUs\) of 1 alive"):
            check_resources(config, ray.nodes())
        assert check_resources(cfg(cpus_per_trial=2), ray.nodes()) is None


# -- backbones -------------------------------------------------------------------------
def petl(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``petl-sweep run --no-progress ARGS`` in ``env`` (default: ours); (result, seconds)."""
    started = time.time()
    done = subprocess.run(
        [str(BIN / "petl-sweep"), "run", "--no-progress", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    return done, time.time() - started


def test_unknown_backbone_is_a_config_error_exit_2(tmp_path):
    done, _ = petl("--set", "backbone=vit_does_not_exist_patch16", "--set", f"out_dir={tmp_path}")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    field = [line for line in output.splitlines() if "backbone:" in line]
    assert field and field[0].strip().startswith(
        "backbone: unknown backbone 'vit_does_not_exist_patch16'; valid: vit_b16_in21k"
    ), output
    assert not (tmp_path / "mlflow.db").exists(), "nothing may start"


@pytest.mark.parametrize("offline", ["1", None])
def test_weights_that_cannot_be_had_offline_fail_in_seconds(tmp_path, offline):
    """Offline mode set, or not (then the check's one request must fail or time out: this
    machine has no route to the hub). Either way: exit 1, one message naming
    backbone_weights, before any data is decoded or Ray started."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = offline
    done, took = petl("--set", f"backbone={SMALL}", "--set", f"out_dir={tmp_path / 'r'}",
                      "--set", f"data_root={tmp_path / 'data'}", env=env)  # fmt: skip
    output = " ".join((done.stdout + done.stderr).split())  # rich wraps the line
    assert done.returncode == 1, output
    assert "Traceback" not in output and "backbone_weights" in output
    assert f"backbone {SMALL}: pretrained weights (hf-hub {SMALL_REPO}) are not in the" in output
    assert not (tmp_path / "data").exists(), "the check must come before any data is written"
    # a loaded 2-core VM spends most of this importing torch; the check itself: see below
    assert took < 120, took


@pytest.fixture
def hanging_hub(monkeypatch):
    """A hub endpoint that accepts connections and never answers."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield
    server.close()


def test_a_hub_that_never_answers_is_given_up_on_in_bounded_time(
    hanging_hub, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.time()
    with pytest.raises(WeightsUnavailableError) as err:
        check_pretrained_weights(SMALL, timeout_s=2)
    assert time.time() - started < 6
    assert "cannot be downloaded (" in str(err.value) and "backbone_weights" in str(err.value)


def test_offline_mode_answers_at_once_and_a_cached_file_is_found(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.time()
    with pytest.raises(WeightsUnavailableError, match=r"cannot be downloaded \(HF_HUB_OFFLINE"):
        check_pretrained_weights(SMALL)
    assert time.time() - started < 2
    # the hub cache's layout: refs/main names the snapshot that holds the file
    repo = tmp_path / f"models--{SMALL_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    weights = repo / "snapshots" / "abc123" / "model.safetensors"
    weights.write_bytes(b"not really weights")
    assert cached("hf-hub", SMALL_REPO) == weights
    assert check_pretrained_weights(SMALL) == weights


def test_the_tiny_backbone_passes_from_its_shipped_file():
    from tuner.backbones import TINY_NAME, TINY_WEIGHTS

    assert check_pretrained_weights(TINY_NAME) == TINY_WEIGHTS


def test_a_sweep_asking_for_a_gpu_on_this_machine_stops_before_any_trial(tmp_path):
    """Through the real sweep: a GPU-less local Ray, one GPU per trial. It used to print
    nothing after Ray started, for as long as anyone waited."""
    import yaml

    sweep = tmp_path / "gpu.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "gpu", "tasks": ["synth/count"], "methods": ["linear"],
        "data_root": str(tmp_path / "data"), "out_dir": str(tmp_path / "out"),
        "resources": {"gpus_per_trial": 1}, "ray": {"num_cpus": 2},
    }))  # fmt: skip
    done = subprocess.run(
        [str(BIN / "petl-sweep"), "run", str(sweep), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    line = " ".join(output.rsplit("error:", 1)[-1].split())
    assert line.startswith("resources.gpus_per_trial = 1: each trial asks for 1 CPUs and 1 GPUs")
    assert "largest node" in line
