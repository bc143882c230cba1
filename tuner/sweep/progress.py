"""Live progress of a sweep: a small board of counts and its rich rendering. Display only.

The board is plain Python; the sweep runs it as a Ray actor that the trial logger updates
and the driver polls, so the display works the same on one machine or a cluster. Nothing
reads it to decide anything (a study's end travels as an event, ``tuner.sweep.events``).

Its "best val/acc" is the selection metric, the final-epoch val accuracy of trials that ran
every epoch, so the live table shows the number the study will be judged by. With hundreds
of studies the table shows the active ones and a totals line, not a row per study.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

#: Rows shown at most; the others are summed up in the title
MAX_ROWS = 20
ACTIVE = ("tuning", "final", "cached")


class ProgressBoard:
    """Counts per study: trials started/finished/stopped early/diverged, best val acc."""

    def __init__(self, studies: list[str], num_samples: int) -> None:
        self.start = time.time()
        self.num_samples = num_samples
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

    def trial_done(self, study: str, outcome: str, val_acc: float | None = None) -> None:
        """A trial ended; ``val_acc`` (its final epoch's) counts only if it ran every epoch."""
        row = self.rows[study]
        row["done"] += 1
        if outcome == "stopped_early":
            row["early"] += 1
        elif outcome == "diverged":
            row["diverged"] += 1
        elif outcome == "completed" and val_acc is not None:
            row["best"] = val_acc if row["best"] is None else max(row["best"], val_acc)

    def snapshot(self) -> dict[str, Any]:
        return {"elapsed": time.time() - self.start, "rows": self.rows, "n": self.num_samples}


def running_trials(rows: dict[str, dict[str, Any]]) -> int:
    """Trials started and not yet ended, over every study of the board."""
    return sum(r["started"] - r["done"] for r in rows.values())


def render(snapshot: dict[str, Any], title: str) -> Table:
    """A rich table of the board: every study while they are few, else the active ones."""
    rows = snapshot["rows"]
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    shown = rows if len(rows) <= MAX_ROWS else {
        k: r for k, r in rows.items() if r["status"] in ACTIVE
    }  # fmt: skip
    totals = " · ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    trials = sum(r["done"] for r in rows.values())
    hidden = len(shown) - MAX_ROWS
    table = Table(
        title=f"{title} · studies {counts.get('done', 0)}/{len(rows)} ({totals}) · "
        f"{trials} trials ended, {running_trials(rows)} running · {snapshot['elapsed']:.0f}s"
        + (f" · {hidden} more active not shown" if hidden > 0 else ""),
        title_justify="left",
    )
    for col in ("study", "status", "trials", "ASHA-stopped", "diverged",
                "best val/acc (final epoch)", "test/acc"):  # fmt: skip
        left = col in ("study", "status")
        table.add_column(col, justify="left" if left else "right", no_wrap=col == "study")
    for name, r in list(shown.items())[:MAX_ROWS]:
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
