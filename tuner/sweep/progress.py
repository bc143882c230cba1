"""Live progress of a sweep: a small state board and its rich rendering.

The board is plain Python; the sweep runs it as a Ray actor that trial callbacks update
and the driver polls, so the display works the same on one machine or a cluster. It is
also the shared run's mailbox to the driver: finished studies and studies that failed to
start are posted here, and the driver takes them to start final retrains.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table


class ProgressBoard:
    """Counts per study: trials started/finished/stopped early/diverged, best val acc."""

    def __init__(self, studies: list[str], num_samples: int) -> None:
        self.start = time.time()
        self.num_samples = num_samples
        self.mailbox: list[tuple[str, Any]] = []
        self.posted_keys: set[str] = set()
        self.rows: dict[str, dict[str, Any]] = {
            s: {
                "status": "queued",
                "started": 0,
                "done": 0,
                "early": 0,
                "diverged": 0,
                "best": None,
                "final": None,
            }
            for s in studies
        }

    def update(self, study: str, **changes: Any) -> None:
        self.rows[study].update(changes)

    def trial_started(self, study: str) -> None:
        self.rows[study]["started"] += 1

    def trial_result(self, study: str, val_acc: float) -> None:
        best = self.rows[study]["best"]
        if best is None or val_acc > best:
            self.rows[study]["best"] = val_acc

    def trial_done(self, study: str, outcome: str) -> None:
        row = self.rows[study]
        row["done"] += 1
        if outcome == "stopped_early":
            row["early"] += 1
        elif outcome == "diverged":
            row["diverged"] += 1

    def post(self, kind: str, payload: Any) -> None:
        """A message for the driver (``done``: a study's summary; ``failed``: a study that
        could not start), taken with ``take``."""
        self.mailbox.append((kind, payload))
        self.posted_keys.add(payload["study"] if kind == "done" else payload[0])

    def posted(self) -> list[str]:
        """Studies whose end (done or failed) was ever posted."""
        return sorted(self.posted_keys)

    def take(self) -> list[tuple[str, Any]]:
        taken, self.mailbox = self.mailbox, []
        return taken

    def snapshot(self) -> dict[str, Any]:
        return {"elapsed": time.time() - self.start, "rows": self.rows, "n": self.num_samples}


def render(snapshot: dict[str, Any], title: str) -> Table:
    """A rich table of the board, one row per study."""
    rows = snapshot["rows"]
    done = sum(r["status"] == "done" for r in rows.values())
    table = Table(
        title=f"{title} · studies {done}/{len(rows)} · {snapshot['elapsed']:.0f}s",
        title_justify="left",
    )
    for col in (
        "study",
        "status",
        "trials",
        "ASHA-stopped",
        "diverged",
        "best val/acc",
        "test/acc",
    ):
        left = col in ("study", "status")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "study")
    for name, r in rows.items():
        best = "" if r["best"] is None else f"{r['best']:.3f}"
        final = "" if r["final"] is None else f"{r['final']:.3f}"
        table.add_row(
            name,
            r["status"],
            f"{r['done']}/{snapshot['n']}",
            str(r["early"]),
            str(r["diverged"]),
            best,
            final,
        )
    return table
