"""The typed records that cross Ray boundaries, and the names every layer agrees on.

A trial's outcome, a study's summary, the event that ends a study and a final run's result
travel between Ray workers, the driver and MLflow. They are dataclasses, so a renamed field is
an error where it is used, not a ``KeyError`` three processes away; ``StudySummary`` and
``TrialRecord`` become plain dicts only as ``summary.json`` in MLflow (``to_json`` /
``from_json``). Metric and tag names live here too: the tracking layer writes them and the
leaderboard reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: The metric ASHA and Optuna optimise (never a test metric).
METRIC = "val/acc"
#: Per-epoch result keys logged to MLflow (Ray adds many bookkeeping fields).
LOGGED = (
    "train/loss",
    "train/acc",
    "val/acc",
    "val/loss",
    "test/acc",
    "epoch_time_s",
    "eval_time_s",
    "checkpoint_s",
    "trial_setup_s",
    "lr",
    "diverged",
    "trainable_params",
    "trainable_params_without_head",
)
#: Per-epoch times whose sums a run logs once at its end (``<name>_total``), so the
#: sweep's slot utilisation reads one value per run instead of every run's history.
EPOCH_TIMES = ("epoch_time_s", "eval_time_s", "checkpoint_s")


def time_totals(epochs: list[dict[str, Any]]) -> dict[str, float]:
    """``<name>_total`` of each of ``EPOCH_TIMES`` over a run's epochs (results)."""
    return {f"{k}_total": float(sum(e.get(k, 0.0) for e in epochs)) for k in EPOCH_TIMES}


#: Suffix of the metric a method's ``prepare`` pass reports (1 = reused, 0 = computed).
REUSED_SUFFIX = "_reused"

Outcome = Literal["completed", "stopped_early", "diverged", "error"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "stopped_early", "diverged", "error")


def logged_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The part of a trial result worth logging: ``LOGGED`` keys and prepare-pass flags."""
    return {k: v for k, v in result.items() if k in LOGGED or k.endswith(REUSED_SUFFIX)}


def first_line(error: BaseException | str | None) -> str:
    """``Type: message`` of an exception (Ray's wrapped cause if there is one), one line."""
    if error is None:
        return ""
    if isinstance(error, BaseException):
        cause = getattr(error, "cause", None) or error
        lines = str(cause).strip().splitlines() or [""]
        return f"{type(cause).__name__}: {lines[0]}".strip()
    return (str(error).strip().splitlines() or [""])[0]


def trial_outcome(result: dict[str, Any] | None, max_epochs: int) -> Outcome:
    """completed / stopped_early (by ASHA) / diverged / error, from a trial's last result."""
    if not result:
        return "error"
    if result.get("diverged"):
        return "diverged"
    if int(result.get("training_iteration", 0)) < max_epochs:
        return "stopped_early"
    return "completed"


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study as the driver sees it after ``Tuner.fit``."""

    index: int
    trial_id: str
    config: dict[str, Any]
    epochs: int
    val_acc: float
    trainable_params: int
    outcome: Outcome
    #: First line of the trial's exception, when it failed
    error: str = ""


@dataclass(frozen=True)
class Prepared:
    """What a method's pre-training pass over the data left behind (SPT: sensitivity).

    ``kind`` names it in MLflow (artifact folder, ``<kind>.key`` param, ``<kind>_reused``
    metric); ``source`` is where it came from (``computed``, ``cache`` or ``artifact``).
    """

    kind: str
    key: str
    source: str
    path: str | None = None


@dataclass
class StudySummary:
    """A finished study: every trial, the chosen one, and what its final runs need."""

    study: str
    task: str
    method: str
    trials: list[TrialRecord]
    best: TrialRecord | None
    wall_s: float
    study_hash: str
    optuna_states: dict[str, int] = field(default_factory=dict)
    #: Artifact URI of the study's prepare pass, for final runs on nodes without the cache.
    prepared_uri: str | None = None
    #: Why the study has no result (empty when it has one)
    error: str = ""
    #: Seconds to open the study (MLflow run, warm start, searcher, prepare pass)
    setup_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return {o: sum(t.outcome == o for t in self.trials) for o in OUTCOMES}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySummary:
        """Read ``summary.json`` (also the older layout, which named the URI per method)."""
        trials = [TrialRecord(**t) for t in data["trials"]]
        best = TrialRecord(**data["best"]) if data.get("best") else None
        uri = data.get("prepared_uri", data.get("sensitivity_uri"))
        return cls(
            study=data["study"],
            task=data["task"],
            method=data["method"],
            trials=trials,
            best=best,
            wall_s=float(data["wall_s"]),
            study_hash=data["study_hash"],
            optuna_states=dict(data.get("optuna_states", {})),
            prepared_uri=uri,
            error=data.get("error", ""),
            setup_s=float(data.get("setup_s", 0.0)),
        )


@dataclass
class FinalResult:
    """A final retrain, as it comes back from its worker to the driver (which logs it)."""

    study: str
    seed_index: int
    spec: Any  # tuner.training.spec.TrialSpec (kept untyped here: records import nothing)
    history: list[dict[str, float]]
    test_acc: float
    trainable_params: int
    trainable_params_without_head: int
    peak_memory_mb: float
    wall_s: float
    started_at: float
    environment: dict[str, Any]
    node_id: str
    #: (logits, labels) on test, for ensembles and bootstrap ties
    predictions: tuple[Any, Any] | None
    trainable_state: dict[str, Any]
    shift_acc: dict[str, float] = field(default_factory=dict)
    #: The method's own report: files (name → bytes) and metrics, e.g. SPT's allocation
    report_files: dict[str, bytes] = field(default_factory=dict)
    report_metrics: dict[str, float] = field(default_factory=dict)
    final_hash: str = ""


@dataclass(frozen=True)
class StudyEnded:
    """The event that a study is over: every trial ended, its summary logged in MLflow."""

    summary: StudySummary

    @property
    def study(self) -> str:
        return self.summary.study


@dataclass(frozen=True)
class StudyFailed:
    """The event that a study could not run (its set-up raised): the first line of the
    error for the user, the whole traceback for ``error.txt``."""

    study: str
    reason: str
    detail: str = ""


#: What the tuning run tells the driver about a study, exactly once per study.
StudyEvent = StudyEnded | StudyFailed


def variant_tag(fixed: dict[str, object]) -> dict[str, str]:
    """The ``variant`` tag of a study's runs: its fixed options as ``k=v,...`` (none: no
    tag). The leaderboard's ``row_key`` gives a variant its own row."""
    text = ",".join(f"{k}={v}" for k, v in sorted(fixed.items()))
    return {"variant": text} if text else {}
