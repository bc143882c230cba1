"""The ``replay:`` section of a sweep: recorded results that stand in for training.

Apart from ``tuner.config`` so the sweep file's schema stays short; the table itself is read
(and checked) by ``tuner.replay.engine``, imported only when a config has this section.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from tuner.training.settings import Strict


class ReplaySettings(Strict):
    """Recorded results stand in for training (``tuner.replay.engine``): tasks, methods and
    hyper-parameter names are the table's labels, not the registries'."""

    table: str | None = Field(None, description="CSV/parquet path or petl_vision_vtab1k")
    experiment: str | None = Field(None, description="instead: a finished sweep's experiment")
    tracking_uri: str = Field("sqlite:///results/mlflow.db", description="with experiment")
    epoch_s: float | None = Field(
        None, ge=0, description="seconds a replayed epoch takes; None: the table's, else 0"
    )

    @model_validator(mode="after")
    def _readable(self) -> ReplaySettings:
        from tuner.replay.engine import replay_table

        if (self.table is None) == (self.experiment is None):
            raise ValueError("replay: give a table or an experiment, not both or neither")
        if self.table and Path(self.table).is_file():  # Ray workers run in other folders
            self.table = str(Path(self.table).resolve())
        replay_table(self)  # a missing or malformed table fails here, naming file and row
        return self

    @property
    def source(self) -> str:
        """The table's name as tags and messages show it."""
        return Path(self.table).name if self.table else f"mlflow:{self.experiment}"


def replay_names(replay: ReplaySettings, part: int) -> tuple[list[str], str]:
    """The replay table's tasks (``part`` 0) or methods (1), in table order, and their kind
    as an error names it (with the table)."""
    from tuner.replay.engine import replay_table

    names = dict.fromkeys(study[part] for study in replay_table(replay).studies())
    return list(names), f"{('task', 'method')[part]} of replay table {replay.source}"
