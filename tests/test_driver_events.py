"""The driver loop's end of the tuning task: events already taken by its waiting read count.

The driver keeps one read waiting on the event queue. When the tuning task's last study ends
it emits ``StudyEnded`` and returns at once; the waiting read takes that event while
``ray.wait`` may report the task's end first. The driver must then handle what the waiting
read holds before it fails every study still owed (found as a flake of the replay scale
test on a loaded machine: the last three studies failed "the tuning run ended before…").
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import ray
from _sweep_helpers import local_ray

from tuner.records import StudyFailed
from tuner.sweep.events import start_events
from tuner.sweep.orchestrate import SweepRun
from tuner.sweep.shared_run import TuningOutcome


@pytest.fixture(scope="module")
def one_cpu_ray():
    with local_ray(num_cpus=1):
        yield


def test_the_last_event_taken_by_the_waiting_read_is_handled(one_cpu_ray):
    run = object.__new__(SweepRun)
    run.events = start_events("driver-events-test", None)
    run.owed = {"t:a": SimpleNamespace(key="t:a"), "t:b": SimpleNamespace(key="t:b")}
    failed: dict[str, str] = {}
    run.study_failed = lambda study, reason, detail: failed.__setitem__(study.key, reason)
    run.next_events = run.events.next_events.remote(30.0)  # the loop's waiting read
    ray.get(run.events.put.remote(StudyFailed("t:a", "its own reason", "detail")))
    time.sleep(0.5)  # the waiting read has taken the event off the queue by now
    run.tuning = ray.put(TuningOutcome())
    run.tuning_done(run.tuning)
    assert failed == {
        "t:a": "its own reason",
        "t:b": "the tuning run ended before this study finished",
    }
    assert run.owed == {} and run.tuning is None
    assert ray.get(run.next_events) == []  # a fresh read is waiting again (nothing queued)
