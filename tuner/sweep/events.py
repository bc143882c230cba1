"""The one channel from the tuning run to the driver: typed study events, in order.

The driver owns an ``EventQueue`` actor; the searcher, deep inside Ray Tune in the tuning
task's process, puts each study's single ``StudyEnded`` / ``StudyFailed`` onto it, and the
driver's loop waits on ``next_events`` beside the tuning task and the final runs. Nothing
here is display state (that is the progress board) and nothing is looked at twice.

``EventSink`` is how the searcher reaches the queue: it finds the actor by the sweep's name
when first used and is never pickled with a handle in it, because Ray Tune saves the
searcher with the experiment and a restored handle would point into a Ray session that no
longer exists. Its ``put`` waits for the actor to take the event, so every event of the
tuning run is in the queue by the time the tuning task returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from tuner.records import StudyEvent


def actor_name(sweep: str, role: str) -> str:
    """The name of one of a sweep's actors (tracker, board, events): one sweep of a name
    runs at a time, so actors found by name are that sweep's."""
    return f"petl-sweep:{sweep}:{role}"


class EventQueue:
    """An async Ray actor: a FIFO of study events, read in batches by one driver loop; and
    the driver's stop request, which the tuning task and the trials read from it."""

    def __init__(self) -> None:
        self.items: list[StudyEvent] = []
        self.ready = asyncio.Event()
        self.stop_requested = False
        self.pid = 0
        self.parked_trials: set[str] = set()

    async def put(self, event: StudyEvent) -> None:
        self.items.append(event)
        self.ready.set()

    async def next_events(self, timeout_s: float) -> list[StudyEvent]:
        """Every event queued so far, waiting up to ``timeout_s`` for the first one."""
        if not self.items:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout_s)
            except TimeoutError:
                return []
        taken, self.items = self.items, []
        self.ready.clear()
        return taken

    # -- the stop request (``tuner.sweep.shutdown``) ---------------------------------------
    async def request_stop(self) -> None:
        self.stop_requested = True

    async def stopping(self) -> bool:
        return self.stop_requested

    async def set_tuner_pid(self, pid: int) -> None:
        self.pid = pid

    async def tuner_pid(self) -> int:
        """The process running Ray Tune's loop (the tuning task), 0 before it started."""
        return self.pid

    async def park(self, trial_id: str) -> None:
        """A trial saved a checkpoint after the stop request and waits to be ended."""
        self.parked_trials.add(trial_id)

    async def parked(self) -> int:
        return len(self.parked_trials)


def start_events(sweep: str, scheduling_strategy: Any) -> Any:
    """The sweep's event queue, on the driver's node (it dies with the driver, not a worker)."""
    return (
        ray.remote(num_cpus=0)(EventQueue)
        .options(name=actor_name(sweep, "events"), scheduling_strategy=scheduling_strategy)
        .remote()
    )


class EventSink:
    """Puts study events onto the sweep's queue, found by name (picklable, handle-free)."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep
        self._queue: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "_queue": None}

    def __call__(self, event: StudyEvent) -> None:
        if self._queue is None:
            self._queue = ray.get_actor(actor_name(self.sweep, "events"))
        ray.get(self._queue.put.remote(event))
