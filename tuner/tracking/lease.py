"""One running copy of a sweep per tracking store: a lease held in MLflow itself.

Two drivers of one sweep on one store duplicate every run, or worse, the second ends the
first's live runs as stale. The store is the one thing both always share (two users of
one MLflow server, a CI job and a laptop), so the lease lives there: a *lease run* in the
sweep's experiment (tag ``stage=lease``), RUNNING while held, tagged with its owner, host,
pid, start and a heartbeat that a background thread renews every ``heartbeat_s``.

MLflow has no compare-and-set, so the lease is decided by a rule every contender
evaluates on the same stored values: **the oldest live lease run wins**. A contender
creates its own lease run (an insert: atomic in every MLflow store), waits ``settle_s``,
lists the RUNNING lease runs, ends the stale ones (heartbeat older than ``timeout_s``, or
a pid on this host that is gone: a crashed driver), and holds the lease if its own run
is the oldest of the rest (by start time, then run id); otherwise it removes its run and
raises ``SweepLocked`` naming the holder. Two simultaneous starts see each other's runs
and agree on one winner. They can both believe they won only if one's insert became
visible more than ``settle_s`` after it took its start time, beyond the other's
re-read (a store stalled for seconds, or clocks skewed by that much). The heartbeat
closes that gap: each beat re-reads the lease runs and a holder that finds an older live
run, or its own run ended by a takeover, sets ``lost`` and calls ``on_lost``; so at worst
two copies run for one heartbeat, and the younger is told to stop.

Ended lease runs (released, lost or taken over) are deleted, so the runs table keeps only
the sweep's studies and trials; a held one shows as ``lease <host>:<pid>``.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from tuner.records import first_line
from tuner.tracking.client import EXPERIMENT_KIND, MODEL_TRAINING

log = logging.getLogger(__name__)

#: A lease whose heartbeat is older than this is a crashed driver's, and is taken over
TIMEOUT_S = 120.0
#: Seconds between heartbeats (a few per timeout, so one slow write never expires it)
HEARTBEAT_S = 15.0
#: Seconds between creating a lease run and reading who holds the lease
SETTLE_S = 2.0
STAGE = "lease"
PREFIX = "petl.lease."


class SweepLocked(RuntimeError):
    """The sweep is running elsewhere: ``holder`` has the lease."""

    def __init__(self, message: str, holder: Holder):
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """One lease run as read back from the store."""

    run_id: str
    owner: str
    host: str
    pid: int
    since: float
    heartbeat: float
    start_ms: int

    @classmethod
    def from_run(cls, run: Any) -> Holder:
        tags = run.data.tags
        return cls(
            run_id=run.info.run_id,
            owner=tags.get(PREFIX + "owner", "?"),
            host=tags.get(PREFIX + "host", "?"),
            pid=int(tags.get(PREFIX + "pid", "0")),
            since=float(tags.get(PREFIX + "since", "0")),
            heartbeat=float(tags.get(PREFIX + "heartbeat", "0")),
            start_ms=int(run.info.start_time or 0),
        )

    def describe(self, now: float | None = None) -> str:
        """``host H, pid P (user U) since 2026-12-01 22:40:01 UTC, heartbeat 3 s ago``"""
        now = time.time() if now is None else now
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"host {self.host}, pid {self.pid} (user {self.owner}) since {when}, "
            f"heartbeat {max(0.0, now - self.heartbeat):.0f} s ago"
        )


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container without a passwd entry for the uid
        return str(os.getuid())


class SweepLease:
    """Hold the lease of ``experiment`` on ``tracking_uri`` for the life of a ``with``.

    ``acquire`` raises ``SweepLocked`` at once when a live driver holds it. A stale lease
    is taken over; ``takeover`` then says whose and why (it is also logged). ``lost`` is
    set, and ``on_lost(reason)`` called once, if the lease is taken from us while held.
    ``artifact_root`` is used only when the lease creates the experiment, and must be the
    sweep's (``SweepConfig.artifact_root``), as the tracker would have created it."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        owner: str | None = None,
        timeout_s: float = TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
        settle_s: float = SETTLE_S,
        artifact_root: str | None = None,
        on_lost: Callable[[str], None] | None = None,
        resume_command: str = "petl-sweep run ... --resume",
    ):
        if heartbeat_s >= timeout_s:
            raise ValueError(f"heartbeat_s ({heartbeat_s}) must be below timeout_s ({timeout_s})")
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.owner, self.host, self.pid = owner or _user(), socket.gethostname(), os.getpid()
        self.timeout_s, self.heartbeat_s, self.settle_s = timeout_s, heartbeat_s, settle_s
        self.artifact_root = artifact_root
        self.on_lost, self.resume_command = on_lost, resume_command
        self.run_id: str | None = None
        self.takeover: str | None = None
        self.lost = threading.Event()
        self.lost_reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the store ------------------------------------------------------------------------
    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                self.experiment,
                artifact_location=self.artifact_root,
                tags={EXPERIMENT_KIND: MODEL_TRAINING},
            )
        except MlflowException:  # another starter created it a moment ago
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _live(self, experiment_id: str) -> list[Holder]:
        """RUNNING lease runs, oldest first (the order every contender agrees on)."""
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.stage = '{STAGE}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        return sorted((Holder.from_run(r) for r in runs), key=lambda h: (h.start_ms, h.run_id))

    def _stale_reason(self, holder: Holder, now: float) -> str | None:
        if holder.host == self.host and not pid_alive(holder.pid):
            return f"its process {holder.pid} is no longer running on this host"
        if now - holder.heartbeat > self.timeout_s:
            age = now - holder.heartbeat
            return f"its heartbeat is {age:.0f} s old (timeout {self.timeout_s:.0f} s)"
        return None

    def _end(self, run_id: str, status: str, why: str) -> None:
        """End a lease run and delete it (the runs table keeps only the sweep's own)."""
        try:
            self.client.set_tag(run_id, PREFIX + "ended", why)
            self.client.set_terminated(run_id, status=status)
            self.client.delete_run(run_id)
        except MlflowException as err:  # two starters ending the same stale run
            log.debug("lease run %s already ended: %s", run_id, err)

    # -- acquire / release ----------------------------------------------------------------
    def acquire(self) -> SweepLease:
        """Take the lease or raise ``SweepLocked``; returns self."""
        experiment_id = self._experiment_id()
        now = time.time()
        tags = {
            "stage": STAGE,  # (no ``sweep`` tag: queries over a sweep's runs pass it by)
            PREFIX + "owner": self.owner,
            PREFIX + "host": self.host,
            PREFIX + "pid": str(self.pid),
            PREFIX + "since": f"{now:.3f}",
            PREFIX + "heartbeat": f"{now:.3f}",
        }
        name = f"lease {self.host}:{self.pid}"
        run = self.client.create_run(
            experiment_id, tags={**tags, MLFLOW_RUN_NAME: name}, run_name=name
        )
        self.run_id = run.info.run_id
        time.sleep(self.settle_s)
        now = time.time()
        live, taken = [], []
        for holder in self._live(experiment_id):
            reason = None if holder.run_id == self.run_id else self._stale_reason(holder, now)
            if reason is None:
                live.append(holder)
                continue
            self._end(holder.run_id, "KILLED", f"taken over by {self.host}:{self.pid}: {reason}")
            taken.append(f"took over the lease of sweep {self.experiment!r} from "
                         f"{holder.describe(now)}: {reason}")  # fmt: skip
        first = live[0] if live else None
        if first is None or first.run_id != self.run_id:
            self._end(self.run_id, "KILLED", "lost the start race" if first else "vanished")
            self.run_id = None
            if first is None:  # our own run is gone: the store dropped or ended it
                raise RuntimeError(f"lease run of sweep {self.experiment!r} vanished")
            raise SweepLocked(self._locked_message(first, now), first)
        if taken:
            self.takeover = "; ".join(taken)
            log.warning("%s", self.takeover)
        self._thread = threading.Thread(
            target=self._beat, args=(experiment_id,), name="sweep-lease", daemon=True
        )
        self._thread.start()
        return self

    def _locked_message(self, holder: Holder, now: float) -> str:
        return (
            f"sweep {self.experiment!r} is already running on {self.tracking_uri}: "
            f"{holder.describe(now)}. Wait for it to finish, or stop it (Ctrl-C, or "
            f"`petl-sweep job stop`) and then run `{self.resume_command}` to continue "
            f"its studies; a lease whose heartbeat is over {self.timeout_s:.0f} s old "
            "(a crashed driver) is taken over by the next start"
        )

    def _beat(self, experiment_id: str) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                reason = self._check(experiment_id)
            except Exception as err:  # MLflow down: try again next beat
                log.warning("sweep lease heartbeat failed (retrying): %s", first_line(err))
                continue
            if reason:
                self.lost_reason = reason
                self.lost.set()
                log.error("%s", reason)
                if self.on_lost is not None:
                    self.on_lost(reason)
                return

    def _check(self, experiment_id: str) -> str | None:
        """One heartbeat: renew ours, or the reason we no longer hold the lease."""
        assert self.run_id is not None
        mine = self.client.get_run(self.run_id)
        if mine.info.status != "RUNNING" or mine.info.lifecycle_stage != "active":
            why = mine.data.tags.get(PREFIX + "ended", "ended by another process")
            return f"lost the lease of sweep {self.experiment!r}: {why}"
        live = self._live(experiment_id)
        now = time.time()
        older = [h for h in live if h.run_id != self.run_id and not self._stale_reason(h, now)]
        older = [h for h in older if (h.start_ms, h.run_id) < (mine.info.start_time, self.run_id)]
        if older:
            self._end(self.run_id, "KILLED", f"found the older lease of {older[0].describe(now)}")
            return (
                f"lost the lease of sweep {self.experiment!r}: it is held by "
                f"{older[0].describe(now)}, which started first"
            )
        self.client.log_batch(self.run_id, tags=[RunTag(PREFIX + "heartbeat", f"{now:.3f}")])
        return None

    def release(self) -> None:
        """Stop the heartbeat and end our lease run (nothing if we never held it or lost it).

        Never raises: a release that cannot reach MLflow leaves a lease that goes stale, and
        the next start takes it over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 30)
            self._thread = None
        if self.run_id is not None and not self.lost.is_set():
            try:
                self._end(self.run_id, "FINISHED", "released")
            except Exception as err:
                log.warning("could not release the sweep lease (it will go stale): %s", err)
        self.run_id = None

    def __enter__(self) -> SweepLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
