"""The tracker's writing half: per-run queues, a pool of writers, the outage journal.

``BufferedTracker`` (what the sweep calls) puts every write here and returns. Every
``flush_every`` seconds the flusher hands each run's queue (``tuner.tracking.lanes``) to a
pool of writer threads: a run's queued metrics, params and tags go out as one ``log_batch``,
different runs at once, each run in its own order. A write that fails for a transport
reason (``transient``) stops the writers, and every queued and later write goes to an
append-only journal on disk until a probe, backing off (``tenacity``), gets through; then the
queues drain in order. A refused write (4xx) is logged and kept in ``refused``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tenacity import Retrying, retry_if_exception, wait_exponential

from tuner.tracking.client import TrackingService
from tuner.tracking.errors import TrackingError, transient
from tuner.tracking.lanes import MERGEABLE, SERIAL, Entry, Lanes, merged

log = logging.getLogger("petl_sweep.tracking")
#: Largest journal (entries) before the sweep stops rather than risk losing more.
MAX_PENDING = 200_000
#: Batches a writer takes from one lane before it goes to the back of the pool's queue
_TURN = 8


class Writer:
    """Queues, writers and journal of one tracker; ``put`` a write, ``flush`` to wait."""

    def __init__(
        self,
        inner: TrackingService,
        journal: Path,
        flush_every: float | None = 1.0,
        workers: int | None = None,
    ) -> None:
        self.inner, self.journal, self.flush_every = inner, journal, flush_every
        self.journal.mkdir(parents=True, exist_ok=True)
        self.lanes, self.lock = Lanes(), threading.Condition()
        self.serial = threading.Lock()  # writes of experiment-wide entities (lanes.SERIAL)
        self.scheduled: set[str] = set()  # lanes a writer holds or will take
        self.seq = 0
        self.down = False  # writers stopped until a probe gets through
        self.warned = False  # an outage not over yet: writes are journaled too
        self.outages = 0  # how many times MLflow went away (the driver may poll after it is back)
        self.failures = 0  # transient failures so far (a forced flush waits for the next)
        #: Why writing is impossible (a full disk), once it is: the driver stops on it
        self.fatal = ""
        self.refused: list[str] = []  # writes MLflow refused (4xx): ``close`` raises on them
        self.sent: dict[str, int] = {}  # MLflow requests made, by kind (log_batch, ...)
        remote = inner.tracking_uri.startswith(("http://", "https://"))
        self.pool = ThreadPoolExecutor(workers or (8 if remote else 1), "tracker-write")
        self.wake = threading.Event()
        threading.Thread(target=self._flusher, name="tracker-flush", daemon=True).start()

    def put(
        self, op: str, lane: str, args: list, kwargs: dict | None = None, ts: int | None = None
    ) -> Entry:
        """Queue one write on its lane (and journal it while an outage lasts)."""
        try:
            with self.lock:
                self.seq += 1
                entry = Entry(self.seq, op, lane, args, kwargs or {}, ts)
                if self.warned:
                    if len(self.lanes) >= MAX_PENDING:
                        raise TrackingError(
                            f"MLflow unreachable and {MAX_PENDING} writes in {self.journal}"
                        )
                    self._journal([entry])
                self.lanes.push(entry)
        except Exception as err:
            self.check_full(err)
            raise
        return entry

    def wait_for(self, entry: Entry) -> str | None:
        """Write ``entry``'s lane now and wait until ``entry`` is in (or MLflow is down)."""
        with self.lock:
            self._schedule(entry.key)
            while not (entry.done or self.fatal or (self.down and entry.key not in self.scheduled)):
                if entry.key not in self.scheduled:
                    self.wake.set()  # its head waits for a parent: let the flusher write that
                self.lock.wait(1.0)
        if entry.error is not None:
            raise entry.error
        return self.inner.runs.get(entry.key) if entry.done else None

    # -- the journal ----------------------------------------------------------------------
    def _journal(self, entries: list[Entry]) -> None:
        """Append to the on-disk journal (lock held); bytes (artifacts) go to files beside it."""
        with open(self.journal / "journal.jsonl", "a") as f:
            for entry in entries:
                for i, arg in enumerate(entry.args):
                    if isinstance(arg, bytes):
                        blob = self.journal / f"blob-{entry.seq}-{i}-{time.time_ns()}"
                        blob.write_bytes(arg)
                        entry.args[i] = {"__blob__": str(blob)}
                f.write(json.dumps(entry.record(), default=str) + "\n")
                entry.journaled = True

    def check_full(self, err: BaseException) -> None:
        """A full disk is no outage (waiting does not help, and the journal is likely on the
        same disk): remember it as one line, raise it from now on, show it in ``status``."""
        from tuner.diskspace import disk_full_message
        from tuner.tracking.store import sqlite_path

        where = sqlite_path(self.inner.tracking_uri) or self.journal
        message = disk_full_message(where, err)
        if message:
            self.fatal = message
            raise TrackingError(message) from None

    def outage(self, err: BaseException) -> None:
        """A transient failure (lock held): stop the writers, journal what is queued."""
        self.failures += 1
        if not self.down:
            self.down = True
            self.wake.set()
        if not self.warned:
            log.warning(
                "MLflow at %s is unreachable (%s); buffering writes in %s",
                self.inner.tracking_uri, str(err).splitlines()[0][:200], self.journal,
            )  # fmt: skip
            self.warned = True
            self.outages += 1
            try:
                self._journal([e for e in self.lanes.entries() if not e.journaled])
            except Exception as failed:
                self.check_full(failed)
                raise

    def back(self) -> None:
        """Everything queued since the outage is in (lock held)."""
        if self.warned and not self.down and not len(self.lanes) and not self.scheduled:
            log.warning("MLflow at %s is back; buffered writes flushed", self.inner.tracking_uri)
            (self.journal / "journal.jsonl").unlink(missing_ok=True)
            self.warned = False

    # -- writing --------------------------------------------------------------------------
    def _schedule(self, key: str) -> None:
        """Give the lane to a writer (lock held)."""
        if key not in self.scheduled and not self.down and not self.fatal:
            self.scheduled.add(key)
            self.pool.submit(self._drain, key)

    def _flusher(self) -> None:
        """Every ``flush_every`` s (or when woken): hand the lanes to writers, or, while
        MLflow is away, probe it with backoff until a write gets through."""
        while True:
            self.wake.wait(self.flush_every)
            self.wake.clear()
            try:
                if self.fatal:
                    continue
                if self.down:
                    self._recover()
                with self.lock:
                    for key in self.lanes.ready():
                        self._schedule(key)
            except TrackingError:
                continue  # fatal: said by status, raised by every later call
            except Exception:
                log.exception("the tracker's flusher failed a round; it goes on")

    def _drain(self, key: str) -> None:
        """A writer's turn at one lane: its batches, in order, until it is empty."""
        again = False
        try:
            for _ in range(_TURN):
                with self.lock:
                    batch = None if self.down or self.fatal else self.lanes.take(key)
                if not batch:
                    return
                self._attempt(key, batch)
            again = True
        except Exception as err:  # recorded by _attempt, or a bug (say so)
            if not (transient(err) or isinstance(err, TrackingError)):
                log.exception("the tracker's writer failed on %s", key)
        finally:
            with self.lock:
                self.scheduled.discard(key)
                if again:
                    self._schedule(key)
                self.back()
                self.lock.notify_all()

    def _attempt(self, key: str, batch: list[Entry]) -> None:
        """Write one batch. Transient failure: an outage (raised, for the prober's backoff);
        a full disk: fatal (raised); a refusal: recorded, and a merged batch is split so that
        only the refused write is left out."""
        try:
            self._apply(key, batch)
        except Exception as err:
            try:
                self.check_full(err)
            except TrackingError:
                with self.lock:
                    self.lock.notify_all()
                raise
            if transient(err):
                with self.lock:
                    self.outage(err)
                raise
            if len(batch) > 1:
                for entry in batch:
                    self._attempt(key, [entry])
                return
            log.error("MLflow refused %s of %s: %s", batch[0].op, key, str(err)[:500])
            self._written(key, batch, err)
            return
        self._written(key, batch, None)

    def _apply(self, key: str, batch: list[Entry]) -> None:
        head = batch[0]
        if head.op in MERGEABLE:
            calls = self.inner.write_batch(key, *merged(batch))
            kind = "log_batch"
        else:
            args = [
                Path(a["__blob__"]).read_bytes() if isinstance(a, dict) and "__blob__" in a else a
                for a in head.args
            ]
            with self.serial if head.op in SERIAL else contextlib.nullcontext():
                getattr(self.inner, head.op)(*args, **head.kwargs)
            calls, kind = 1, head.op
        with self.lock:
            self.sent[kind] = self.sent.get(kind, 0) + calls

    def _written(self, key: str, batch: list[Entry], err: BaseException | None) -> None:
        with self.lock:
            for child in self.lanes.pop(key, batch):  # children of a run just created
                self._schedule(child)
            for entry in batch:
                entry.done, entry.error = True, err
                if err is not None:
                    self.refused.append(f"{entry.op} {key}: {str(err).splitlines()[0][:300]}")
                for arg in entry.args:
                    if isinstance(arg, dict) and "__blob__" in arg:
                        Path(arg["__blob__"]).unlink(missing_ok=True)
            self.lock.notify_all()

    def _recover(self) -> None:
        """While MLflow is away: write the oldest queued batch, backing off 1 s, 2 s, ... 30 s
        (woken early by a forced flush), until it gets through; then the writers resume."""
        self._nap(1.0)
        Retrying(
            retry=retry_if_exception(transient),
            wait=wait_exponential(multiplier=1, min=1, max=30),
            sleep=self._nap,
            reraise=True,
        )(self._probe)

    def _probe(self) -> None:
        batch = None
        with self.lock:
            key = None if self.fatal else self.lanes.oldest(skip=self.scheduled)
            if key is not None:
                self.scheduled.add(key)
                batch = self.lanes.take(key)
        try:
            if batch:
                self._attempt(key, batch)
        finally:
            with self.lock:
                self.scheduled.discard(key)
                self.lock.notify_all()
        with self.lock:
            self.down = False
            self.back()
            self.lock.notify_all()

    def _nap(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    # -- waiting for the writes -----------------------------------------------------------
    def flush(self, force: bool = False) -> int:
        """Write everything queued and wait for it; returns what is still pending (MLflow
        is away). ``force``: while MLflow is away, probe it now and wait for the answer."""
        with self.lock:
            first = self.failures
            while not self.fatal:
                idle = not self.scheduled
                if idle and not len(self.lanes):
                    break
                if idle and self.down and (not force or self.failures > first):
                    break
                if idle:
                    self.wake.set()  # the flusher hands out the lanes (or probes, if forced)
                self.lock.wait(1.0)
            return len(self.lanes)

    # -- a read's view of an outage ---------------------------------------------------------
    def read_failed(self, err: BaseException) -> None:
        """A read found MLflow away: that is an outage too (warned, counted)."""
        with self.lock:
            if not self.warned:
                self.outage(err)
                self.down = False  # nothing queued to probe with: writes go on

    def read_ok(self) -> None:
        with self.lock:
            self.back()
