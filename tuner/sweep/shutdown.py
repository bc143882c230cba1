"""One way a sweep stops early: Ctrl-C and SIGTERM take the same, clean path.

Kubernetes, ``ray job stop`` and CI runners send SIGTERM; a user at a terminal presses
Ctrl-C. Either way the driver asks the running trials to checkpoint (each at the end of its
current epoch, within ``tune.stop_grace_s``), has Ray Tune save its state, closes every run
it holds open as ``KILLED`` with ``outcome=interrupted`` (``--resume`` continues them),
flushes the tracker, shuts its local Ray down and exits 130 (SIGINT) or 143 (SIGTERM). A
second signal skips the wait. The handlers replace Ray's own native ones in the driver,
whose SIGTERM dump ends in SIGABRT (exit 134), which Kubernetes and CI read as a crash.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

#: Exit status of a process ended by signal N, as shells report it (128 + N)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """The first SIGINT/SIGTERM asks for a clean stop, a second one forces it.

    Handlers only set flags (nothing else is safe inside one); the driver loop reads them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced = False
        self._before: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        else:
            self.forced = True

    def ask(self) -> None:
        """Ask for the clean stop from inside the program (as SIGTERM would)."""
        self._handle(signal.SIGTERM, None)

    def install(self) -> StopRequest:
        """Take SIGINT and SIGTERM (main thread only; elsewhere Python cannot)."""
        if threading.current_thread() is threading.main_thread():
            for sig in EXIT_CODES:
                self._before[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._before.clear()

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@dataclass
class SweepInterrupted(Exception):
    """A sweep stopped on a signal, cleanly: what was kept, what the user types next."""

    signum: int
    trials_kept: int
    trials_interrupted: int
    runs_closed: int
    finals_cancelled: int

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(signal.Signals(self.signum), 1)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"sweep interrupted by {self.signal_name}"
