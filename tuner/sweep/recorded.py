"""Trials that finished before a crash, replayed from MLflow on ``--resume``, never retrained.

Ray Tune saves its experiment state only every ``tune.state_save_s`` (``auto``: every 10 s
or more), so after a SIGKILL ``Tuner.restore`` comes back as of the last save. A trial whose
MLflow run FINISHED (or FAILED as diverged) after that save is then in one of two states:

(a) *known*: the restored state has it (same trial id) as RUNNING/PENDING, and Ray Tune
    resumes it (from its last checkpoint, if any);
(b) *unknown*: it was created after the save, so no restored part knows it, and its study's
    searcher would ask for a replacement: one trial more than the budget.

Either way the trial is *replayed*: its trainable does not train but reports the recorded
``val/acc`` of each epoch (``RecordedTrial.result``, each result flagged ``FLAG``), so Ray
Tune, ASHA, the study's TPE and ``StudyState.record`` end it with the epochs, accuracy and
outcome MLflow holds; the trial logger (``callbacks.MLflowTrialCallback``) leaves its run
untouched (no metric, no new end time), and the scheduler keeps ASHA from cutting a replay
short (its rungs still learn the values). For (b), the restored searcher hands the study's
unknown recorded trials out *first*, as suggestions marked ``RECORDED`` (the recorded trial
id): they use budget slots, so the study ends with exactly its budget. A grid study hands
each out at its own grid point (``Replays.take``), so no point runs twice or is skipped.

Studies cross the save too. One that finished after it is reused by the driver (its run is
FINISHED), yet the restored searcher has it open: it is closed there without a word
(``MultiStudySearcher.set_state``, from ``owed``), and its resumed trials replay. One that
opened after it is opened again, continuing the run the driver adopted (``open_study``).

The driver finds these trials (``tuner.sweep.reconcile``: one search, and one metric history
per trial to replay) and the tuning task publishes them here (``publish``) before
``Tuner.restore``: the searcher and the trial logger are unpickled from the experiment and
read them by the sweep's name in the same process (the Ray Tune controller's); trainables
get them in their closure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from tuner.records import METRIC

#: Bookkeeping key of a suggestion that replays a recorded trial: that trial's id
RECORDED = "__recorded"
#: Key of every result a replay reports (1.0): the logger and the scheduler look for it
FLAG = "recorded"
#: A checkpoint's epoch, readable without the trainer (``tuner.sweep.trainable`` writes it)
EPOCH_FILE = "epoch.json"
#: The replay engine's checkpoint (``tuner.replay.trial``) holds its epoch the same way
EPOCH_FILES = (EPOCH_FILE, "replay.json")


@dataclass(frozen=True)
class RecordedTrial:
    """A trial as its MLflow run recorded it: what a replay reports."""

    trial_id: str
    study: str
    #: hyper-parameters (the study's fixed options excluded), typed by the study's space
    config: dict[str, Any]
    #: ``val/acc`` of epochs 1..n
    curve: tuple[float, ...]
    diverged: bool = False
    trainable_params: int = 0
    #: when its run started (epoch ms): the order its study suggested it
    started: int = 0
    #: its hyper-parameters as MLflow holds them (strings), to find its grid point
    params: dict[str, str] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.curve)

    def result(self, epoch: int) -> dict[str, float]:
        """What the trial reported after ``epoch`` (1-based), as far as its outcome goes."""
        return {
            METRIC: self.curve[epoch - 1],
            "epoch": epoch,
            "diverged": float(self.diverged and epoch == self.epochs),
            "trainable_params": self.trainable_params,
            FLAG: 1.0,
        }

    def matches(self, point: dict[str, Any]) -> bool:
        """Whether ``point`` (a grid point) is this trial's configuration."""
        return all(self.params.get(k) == str(v) for k, v in point.items())


# -- handed from the tuning task to what Ray Tune unpickles ---------------------------------
_PUBLISHED: dict[str, tuple[dict[str, RecordedTrial], set[str]]] = {}


def publish(sweep: str, recorded: dict[str, RecordedTrial], owed: set[str]) -> None:
    """For this process's run of ``sweep``: the recorded trials to replay (trial id →
    trial), and the studies it tunes (``owed``; the driver reuses the others, finished)."""
    _PUBLISHED[sweep] = (dict(recorded), set(owed))


def published(sweep: str) -> dict[str, RecordedTrial]:
    return _PUBLISHED.get(sweep, ({}, set()))[0]


def owed(sweep: str) -> set[str] | None:
    """The studies this run tunes; None where nothing was published."""
    return _PUBLISHED[sweep][1] if sweep in _PUBLISHED else None


def is_replay(trial: Any, recorded: dict[str, RecordedTrial]) -> bool:
    """Whether a Ray Tune trial replays a recorded one: (b) marked, or (a) known by id."""
    return bool(trial.config.get(RECORDED)) or trial.trial_id in recorded


# -- the trainable's side -------------------------------------------------------------------
def replaying(config: dict[str, Any], recorded: dict[str, RecordedTrial]) -> RecordedTrial | None:
    """The recorded trial this trial replays, or None: it trains."""
    marked = config.get(RECORDED)
    if marked:
        if marked not in recorded:
            raise KeyError(f"recorded trial {marked} was not handed to this run's trainable")
        return recorded[marked]
    if not recorded:
        return None
    return recorded.get(tune.get_context().get_trial_id())


def checkpoint_epoch(fallback: Callable[[Path], int] | None = None) -> int:
    """The epoch the trial's checkpoint holds (0: none); ``fallback`` reads a checkpoint
    without an epoch file (one written before it existed)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        for name in EPOCH_FILES:
            path = Path(directory) / name
            if path.is_file():
                return int(json.loads(path.read_text())["epoch"])
        return fallback(Path(directory)) if fallback else 0


def replay_recorded(trial: RecordedTrial, start: int) -> None:
    """Report the recorded epochs after ``start`` (the checkpoint's), no training, no
    checkpoint. A trial restored past its recorded epochs reports its last one again, so
    it still ends on a flagged result (the logger leaves it alone)."""
    epochs = range(start + 1, trial.epochs + 1) if start < trial.epochs else [trial.epochs]
    for epoch in epochs:
        tune.report(trial.result(epoch))


# -- the searcher's side --------------------------------------------------------------------
@dataclass
class Replays:
    """The searcher's recorded trials of kind (b), saved and restored with it."""

    #: study → its recorded trials not yet handed out, in suggestion order
    pending: dict[str, list[RecordedTrial]] = field(default_factory=dict)
    #: trial id of a replay in flight → the recorded trial it replays
    live: dict[str, RecordedTrial] = field(default_factory=dict)
    #: every replay handed out: its trial id → the recorded trial id
    aliases: dict[str, str] = field(default_factory=dict)

    def refill(self, recorded: dict[str, RecordedTrial], known: set[str]) -> None:
        """After a restore: the recorded trials that no restored part knows (not suggested
        by id, not handed out as a replay before), per study."""
        done = known | set(self.aliases.values())
        self.pending = {}
        for trial in sorted(recorded.values(), key=lambda t: (t.started, t.trial_id)):
            if trial.trial_id not in done:
                self.pending.setdefault(trial.study, []).append(trial)

    def take(self, study: str, point: dict[str, Any] | None) -> RecordedTrial | None:
        """The study's next recorded trial to hand out: the first pending one, or for a
        grid study (``point``: the grid point due next) the one recorded at that point."""
        pending = self.pending.get(study)
        if not pending:
            return None
        index = 0 if point is None else next(
            (i for i, t in enumerate(pending) if t.matches(point)), None
        )  # fmt: skip
        return None if index is None else pending.pop(index)

    def start(self, trial_id: str, trial: RecordedTrial) -> None:
        self.live[trial_id] = trial
        self.aliases[trial_id] = trial.trial_id
