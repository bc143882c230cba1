"""The analyses' sections of the leaderboard page: the newest ``analysis`` run per kind.

``petl-sweep analyze KIND`` logs a summary table and PNG plots as an ``analysis`` run; the
leaderboard page shows each kind's newest one under its title, so one HTML file holds the
table and every analysis made of the same experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tuner.tracking.client import TrackingService


@dataclass(frozen=True)
class Section:
    kind: str
    title: str
    summary: pd.DataFrame
    images: dict[str, Path]


def analysis_sections(trackers: list[TrackingService], tmp: Path) -> list[Section]:
    """The newest analysis run of every kind in ``trackers``' experiments, downloaded."""
    newest: dict[str, tuple[TrackingService, dict]] = {}
    for tracker in trackers:
        for run in tracker.find({"stage": "analysis"}):
            kind = run["tags"].get("analysis", "")
            known = newest.get(kind)
            if kind and (known is None or run["start_time"] > known[1]["start_time"]):
                newest[kind] = (tracker, run)
    sections = []
    for kind in sorted(newest):
        tracker, run = newest[kind]
        folder = tracker.download(run["run_id"], "analysis", tmp / run["run_id"])
        summary_file = folder / f"{kind}.summary.parquet"
        if not summary_file.exists():  # an analysis run from before summaries were logged
            continue
        images = {p.stem: p for p in sorted(folder.glob("*.png"))}
        title = run["tags"].get("title", kind)
        sections.append(Section(kind, title, pd.read_parquet(summary_file), images))
    return sections
