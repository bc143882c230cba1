"""The tracker's queued writes: one ordered lane per run, merged into batches when written.

A trial reports an epoch at a time, and at cluster scale hundreds of trials report every
second. MLflow takes a run's metrics, params and tags in one ``log_batch``, and writes to
different runs do not depend on each other. So the tracker keeps a FIFO per run key (a run's
writes go out in the order the sweep made them: creation first, ``end_run`` last), hands a
writer a lane's mergeable writes up to its next creation or end as one batch (they may
overtake a queued artifact, never a run's creation or its end), and lets different lanes be
written at once. The one order between lanes: a child run is created after its parent (its
``start_run`` needs the parent's MLflow id).

Not thread-safe by itself: the tracker holds its lock around every call.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Writes that go out together as one ``log_batch`` per run
MERGEABLE = frozenset({"log_metrics", "log_params", "set_tags"})
#: Writes that give a key its MLflow run (children wait for them)
CREATES = frozenset({"start_run", "adopt", "fail_run"})
#: Writes that a mergeable write may overtake (files beside the run, not its state): a
#: trial's last metrics and end tags go out together although it logged an artifact between
PASSABLE = frozenset({"log_artifact_bytes", "log_dict", "log_dataset"})
#: Writes that create an experiment-wide entity (a dataset, shared by every study of a
#: task): one at a time across lanes, or two runs race to create it and MLflow refuses one
SERIAL = frozenset({"log_dataset"})
#: Most writes merged into one batch (a long outage's backlog goes out in several)
MAX_MERGED = 500


@dataclass
class Entry:
    """One write the sweep made, as the journal records it (``record``)."""

    seq: int
    op: str
    key: str  # the lane: a run key, or ``run-id:<id>`` for runs addressed by MLflow id
    args: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    ts: int | None = None  # log_metrics: when it was reported (epoch ms), not when written
    journaled: bool = False
    done: bool = False
    error: BaseException | None = None

    def record(self) -> dict[str, Any]:
        out = {"seq": self.seq, "op": self.op, "args": self.args, "kwargs": self.kwargs}
        return out if self.ts is None else {**out, "ts": self.ts}


class Lanes:
    """Per-run FIFOs of ``Entry``; ``take`` a lane's next batch, ``pop`` it once written."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Entry]] = {}
        self.count = 0
        self.creating: Counter[str] = Counter()  # key -> its queued creations
        self.blocked: dict[str, set[str]] = {}  # parent key -> lanes whose head waits on it

    def __len__(self) -> int:
        return self.count

    def push(self, entry: Entry) -> None:
        self.queues.setdefault(entry.key, deque()).append(entry)
        self.count += 1
        if entry.op in CREATES:
            self.creating[entry.key] += 1

    def _waits_on(self, entry: Entry) -> str | None:
        parent = entry.kwargs.get("parent") if entry.op == "start_run" else None
        if parent is not None and parent != entry.key and self.creating[parent]:
            return parent
        return None

    def take(self, key: str) -> list[Entry] | None:
        """The lane's next batch (left in the lane until ``pop``), or None: empty, or its
        head is a child whose parent is not created yet (``pop`` of the parent frees it)."""
        queue = self.queues.get(key)
        if not queue:
            return None
        parent = self._waits_on(queue[0])
        if parent is not None:
            self.blocked.setdefault(parent, set()).add(key)
            return None
        batch = []
        for entry in queue:
            if len(batch) >= MAX_MERGED:
                break
            if entry.op in MERGEABLE:
                batch.append(entry)
            elif entry.op not in PASSABLE:
                break
        return batch or [queue[0]]

    def pop(self, key: str, entries: list[Entry]) -> list[str]:
        """Remove a written (or refused) batch from its lane; returns the lanes that were
        waiting for this key's run to exist and now may go."""
        gone = {id(e) for e in entries}
        queue = self.queues[key]
        kept = deque(e for e in queue if id(e) not in gone)
        assert len(kept) == len(queue) - len(entries), "a batch is taken from its own lane"
        self.count -= len(entries)
        self.creating[key] -= sum(e.op in CREATES for e in entries)
        if kept:
            self.queues[key] = kept
        else:
            del self.queues[key]
        if self.creating[key] > 0:
            return []
        self.creating.pop(key, None)
        return sorted(self.blocked.pop(key, ()))

    def ready(self) -> list[str]:
        """Lanes with something to write now (the others wait for a parent: ``pop`` of the
        parent's creation names them)."""
        keys = []
        for key, queue in self.queues.items():
            parent = self._waits_on(queue[0])
            if parent is None:
                keys.append(key)
            else:
                self.blocked.setdefault(parent, set()).add(key)
        return keys

    def oldest(self, skip: set[str]) -> str | None:
        """The ready lane (not in ``skip``) holding the oldest write: where a replay starts."""
        keys = [k for k in self.ready() if k not in skip]
        return min(keys, key=lambda k: self.queues[k][0].seq, default=None)

    def entries(self) -> Iterator[Entry]:
        """Every queued write, oldest first (the journal's order)."""
        return iter(sorted((e for q in self.queues.values() for e in q), key=lambda e: e.seq))


def merged(entries: list[Entry]) -> tuple[list[tuple[str, float, int, int]], dict, dict]:
    """A batch of mergeable writes as one ``log_batch``: (metrics, params, tags). Metrics keep
    each report's step and time; a repeated param keeps its first value (MLflow refuses a
    change), a repeated tag its last (a later ``set_tags`` overrides an earlier one)."""
    from tuner.tracking.client import flatten

    metrics: list[tuple[str, float, int, int]] = []
    params: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for entry in entries:
        if entry.op == "log_metrics":
            _, values, step = entry.args
            metrics.extend((k, float(v), entry.ts or 0, int(step)) for k, v in values.items())
        elif entry.op == "log_params":
            for k, v in flatten(entry.args[1]).items():
                params.setdefault(k, v)
        else:
            tags.update(entry.args[1])
    return metrics, params, tags
