"""Whether the sweep asked its trials to stop: what every trainable polls after each epoch.

Apart from ``tuner.sweep.trainable`` so a trainable that does not train (a replay's,
``tuner.replay.trial``) can use it without importing torch in each of its workers.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune

from tuner.sweep.events import actor_name


class StopWatch:
    """Whether the sweep asked its trials to stop, read from its event queue at most once a
    second (a trial reports many epochs a second on a GPU; the queue is one actor)."""

    def __init__(self, sweep: str, every_s: float = 1.0) -> None:
        self.sweep, self.every_s = sweep, every_s
        self.checked, self.answer, self._queue = 0.0, False, None

    def _actor(self) -> Any:
        if self._queue is None:
            self._queue = ray.get_actor(actor_name(self.sweep, "events"))
        return self._queue

    def requested(self) -> bool:
        if not self.answer and time.monotonic() - self.checked >= self.every_s:
            self.checked = time.monotonic()
            try:
                self.answer = bool(ray.get(self._actor().stopping.remote(), timeout=10))
            except Exception:  # no queue (a trainable run outside a sweep): never stop
                self.answer = False
        return self.answer

    def park(self) -> None:
        """Tell the driver this trial's checkpoint is saved, then wait to be ended: returning
        would mark the trial as finished, and it is not."""
        ray.get(self._actor().park.remote(tune.get_context().get_trial_id()))
        while True:
            time.sleep(1.0)
