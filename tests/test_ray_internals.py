"""The Ray behaviours the sweep relies on that are not Ray's documented API: if an upgrade
moves one of them, these fail loudly instead of the sweep silently losing the behaviour."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

from ray._private import ray_constants
from ray.tune import tune as tune_module

from tuner.sweep.ray_internals import (
    interrupt_tuner,
    loopback_only,
    node_here,
    saved_state_readable,
    saved_trial_statuses,
)


def test_the_single_machine_switch_exists_and_is_put_back():
    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_only():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert before == ray_constants.ENABLE_RAY_CLUSTER
    # Ray's start reads the module attribute when it picks the node address
    from ray._private import services

    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services)


def test_node_here_outside_ray_is_empty_and_starts_no_ray():
    import ray

    assert not ray.is_initialized()
    assert node_here() == ""
    assert not ray.is_initialized()


def test_ray_tune_still_stops_its_loop_on_sigusr1():
    source = inspect.getsource(tune_module._setup_signal_catching)
    assert "SIGUSR1" in source and "experiment_interrupted_event.set()" in source


def test_interrupt_reaches_a_tune_loop_in_another_process(tmp_path):
    """A real Ray Tune run in a subprocess saves its state and returns on SIGUSR1."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import ray
        from ray import tune

        def slow(config):
            for i in range(600):
                time.sleep(0.1)
                tune.report({{"i": i}})

        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        print("pid", os.getpid(), flush=True)
        tuner = tune.Tuner(slow, run_config=tune.RunConfig(
            name="stop", storage_path={str(tmp_path)!r}, verbose=0))
        result = tuner.fit()
        print("returned", result[0].metrics.get("i"), result[0].metrics["trial_id"], flush=True)
        ray.shutdown()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "TUNE_DISABLE_SIGINT_HANDLER": "1"},
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("pid"):
            break
    import time

    saved = tmp_path / "stop"
    deadline = time.time() + 120
    while not list(saved.glob("*/result.json")) and time.time() < deadline:
        time.sleep(0.5)
    assert interrupt_tuner(proc.pid)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "returned" in out
    assert list(saved.glob("experiment_state-*.json")), "the experiment state was saved"
    assert saved_state_readable(str(saved))  # the newest state file is whole JSON
    trial_id = out.split("returned")[1].split()[1]
    # what --resume reads to find the trials the restore holds unfinished (RUNNING: continued)
    assert saved_trial_statuses(str(saved)) == {trial_id: "RUNNING"}
    assert saved_trial_statuses(str(tmp_path / "none")) is None
    # remote storage (s3://, gs://) is read through pyarrow.fs, as Ray Tune writes it: file://
    # takes the same path here
    assert saved_trial_statuses(saved.as_uri()) == {trial_id: "RUNNING"}
    assert saved_trial_statuses((tmp_path / "none").as_uri()) is None
    newest = sorted(saved.glob("experiment_state-*.json"))[-1]
    newest.write_text(newest.read_text()[:100])  # as a full disk leaves it
    assert not saved_state_readable(str(saved))
    assert not interrupt_tuner(2**22 + 12345)  # no such process: False, no exception
