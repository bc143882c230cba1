"""The sweep configuration (``sweep.yaml``), validated with pydantic.

Every field is checked before a single trial starts: an unknown method or task names the
bad value and lists the valid ones, a wrong type names the field path (``tune.max_epochs``),
and unknown keys are rejected (a typo never silently falls back to a default).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tuner import methods
from tuner.backbones import TINY_NAME
from tuner.data.tasks import get_task, list_tasks
from tuner.util import unknown_message

QUICKSTART = Path(__file__).parent / "quickstart.yaml"


#: A ``shifts`` value naming a synthetic task's own shift set (``shift_<name>.txt``)
SYNTH_SHIFT = "synth"


def synth_shift_path(task: str, name: str, data_root: str | Path) -> Path:
    """Where the synth suite writes ``task``'s shift set ``name`` (absolute)."""
    from tuner.data.subsets import parse_task
    from tuner.data.synth.shifted import SHIFTS, shift_file
    from tuner.data.tasks import get_task, task_dir

    base = parse_task(task).base
    if get_task(base).suite != "synth" or name not in SHIFTS:
        raise ValueError(
            f"shifts.{task}.{name}: 'synth' names a synthetic task's own shift set; "
            f"expected a synth/* task and one of {sorted(SHIFTS)}"
        )
    return (task_dir(base, Path(data_root)) / shift_file(name)).absolute()


class ConfigError(ValueError):
    """A sweep config that cannot be run; the message names the file and field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TuneSettings(_Strict):
    """Per-study budget: every (task, method) study gets exactly this."""

    num_samples: int = Field(8, ge=1, description="trials per study (Optuna samples)")
    max_epochs: int = Field(8, ge=1, description="epochs of a trial that ASHA never stops")
    grace_period: int = Field(2, ge=1, description="ASHA: epochs before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/rf of trials per rung")
    max_concurrent_trials: int = Field(2, ge=1, description="running trials per study")
    checkpoint_every: int = Field(
        0, ge=0, description="epochs between trial checkpoints (0: only the time rule)"
    )
    checkpoint_interval_s: float = Field(
        120.0, ge=0, description="seconds of training between trial checkpoints (0: off)"
    )
    early_stopping: bool = Field(
        True, description="ASHA; false: every trial runs max_epochs (a grid search as published)"
    )
    state_save_s: float = Field(
        1.0,
        ge=0,
        description="Ray Tune saves trial statuses at most this often (TUNE_GLOBAL_CHECKPOINT_S);"
        " a crash re-runs the trials that ended since the last save",
    )
    stop_grace_s: float = Field(
        30.0, ge=0, description="on Ctrl-C/SIGTERM: seconds running trials get to checkpoint"
    )

    #: Settings that change how a sweep runs, never a study's result (kept out of its hash)
    RESULT_NEUTRAL: ClassVar[set[str]] = {"state_save_s", "stop_grace_s"}

    @model_validator(mode="after")
    def _grace_fits(self) -> TuneSettings:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                f"grace_period ({self.grace_period}) exceeds max_epochs ({self.max_epochs})"
            )
        return self


class SearchSettings(_Strict):
    space: Literal["optuna", "published_grid"] = "optuna"
    sampler: Literal["auto", "grid", "tpe"] = Field(
        "auto",
        description="auto: every grid point for published_grid, TPE for optuna; "
        "tpe with published_grid: TPE (and ASHA) over the grid's values",
    )
    spaces_dir: Path | None = Field(None, description="override the shipped search_spaces/")
    fixed: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method fixed hyper-parameters, e.g. lora: {rank: 4}"
    )
    warm_start: bool = Field(
        False, description="seed TPE with the same method's chosen configs on other tasks"
    )
    warm_start_top: int = Field(3, ge=1, description="warm-start points per study, at most")
    prior: str | None = Field(
        None,
        description="a replay table (petl_vision_vtab1k, or a CSV/parquet path): TPE first "
        "tries the method's configurations that came within prior_eps of the best on most of "
        "the table's other tasks (tuner.replay.prior; bench/replay_strategies.py)",
    )
    prior_top: int = Field(16, ge=1, description="prior points per study, at most")
    prior_eps: float = Field(0.01, ge=0, description="prior: 'near the best' on a task")

    @field_validator("prior")
    @classmethod
    def _prior_exists(cls, value: str | None) -> str | None:
        if value is not None:
            from tuner.replay.table import resolve

            resolve(value)  # a TableError (a ValueError) names the shipped tables
        return value


class TrainSettings(_Strict):
    batch_size: int = Field(64, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_lr_init: float | None = Field(
        None, ge=0, description="lr at the first warm-up step (studies: 1e-6); None: lr/steps"
    )
    lr_min: float = Field(0.0, ge=0, description="cosine floor (studies: 1e-5)")
    lr_schedule: Literal["step", "epoch"] = Field(
        "step", description="epoch: timm's CosineLRScheduler stepped per epoch (the studies)"
    )
    weight_decay_on: Literal["matrices", "all"] = Field(
        "matrices", description="all: every tuned tensor decays (the seed studies)"
    )
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="fixed drop path for every run (studies: 0.1)"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    pretrained: bool = True
    normalize: bool = Field(True, description="False: [0, 1] pixels, no mean/std (seed studies)")


class FinalSettings(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    seeds: int = Field(3, ge=1, description="retrains of the best config on train+val")
    epochs: int | None = Field(None, ge=1, description="default: tune.max_epochs")
    # ``final.register`` in the file; another attribute name, since pydantic models inherit
    # ABCMeta's ``register`` and a field of that name would shadow it
    register_champions: bool = Field(
        True,
        alias="register",
        description="register each task's champion in the MLflow Model Registry",
    )


class ResourceSettings(_Strict):
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0, description="fractions share one GPU, e.g. 0.25")
    max_concurrent_studies: int | None = Field(
        None, ge=1, description="studies open at once; default: enough to fill every slot, plus one"
    )
    autoscaling: bool | None = Field(
        None,
        description="whether the Ray cluster can add nodes (a request no node holds then waits "
        "instead of failing); default: detected (a local Ray never does)",
    )
    pending_timeout_s: float = Field(
        1800.0, gt=0, description="autoscaling: give up when no trial could start for this long"
    )


class TrackingSettings(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under out_dir")
    experiment: str | None = Field(None, description="default: the sweep name")


class RaySettings(_Strict):
    address: str | None = Field(None, description="None: start a local Ray; 'auto': join one")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only")
    storage_path: str | None = Field(None, description="Ray Tune storage; shared FS or s3://")


class ReplaySettings(_Strict):
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


class SweepConfig(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    backbone: str = Field(TINY_NAME, description="timm model name or preset (petl-sweep backbones)")
    backbone_weights: str | None = Field(
        None, description="offline weights: path or fsspec URL (.safetensors/.pth/.npz)"
    )
    #: before tasks and methods: their validators read it (replay names are the table's)
    replay: ReplaySettings | None = None
    tasks: list[str] = Field(..., min_length=1)
    methods: list[str] = Field(..., min_length=1)
    data_root: Path = Path("data")
    out_dir: Path = Path("results")
    tune: TuneSettings = TuneSettings()
    search: SearchSettings = SearchSettings()
    train: TrainSettings = TrainSettings()
    final: FinalSettings = FinalSettings()
    resources: ResourceSettings = ResourceSettings()
    tracking: TrackingSettings = TrackingSettings()
    ray: RaySettings = RaySettings()
    shifts: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="evaluation-only shift sets: task id -> {shift name -> list file, folder, "
        "or synth (a synth task's own shift set)}",
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from tuner.backbones import check_backbone_name

        check_backbone_name(value)  # an unknown name fails here, not in every trial
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("replay"):
            return _expand(value, *_replay_names(info.data["replay"], 1))
        expanded = _expand(value, methods.list_methods(), "method")
        return expanded

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("replay"):
            return _expand(value, *_replay_names(info.data["replay"], 0))
        return _expand_tasks(value)

    @model_validator(mode="after")
    def _shifts_exist(self) -> SweepConfig:
        if self.replay:  # a replayed final has no test images to shift
            self.shifts = {}
        for task, sets in self.shifts.items():
            if task not in self.tasks:
                raise ValueError(
                    f"shifts: task {task!r} is not in the sweep; expected one of {self.tasks}"
                )
            for name, path in sets.items():
                if path == SYNTH_SHIFT:
                    sets[name] = str(synth_shift_path(task, name, self.data_root))
                    continue  # written with the synth suite when the sweep starts
                if not Path(path).exists():
                    raise ValueError(
                        f"shifts.{task}.{name}: {path} does not exist; expected a "
                        "'<image path> <label>' list file or an image folder <class>/*.png"
                    )
                sets[name] = str(Path(path).absolute())  # Ray workers run in other folders
        return self

    @model_validator(mode="after")
    def _fixed_is_valid(self) -> SweepConfig:
        if self.replay:  # labels: the replay plan checks fixed values against the table
            return self
        # A preset fixes options of all its methods; a file laid over it may run fewer, so a
        # registered method outside the sweep is checked but not an error (a typo still is).
        for name, hp in self.search.fixed.items():
            if name not in methods.list_methods():
                raise ValueError(
                    "search.fixed: " + unknown_message("method", name, methods.list_methods())
                )
            try:  # the method's typed config: names method, field, value and bound
                methods.get(name, **hp)
            except ValueError as err:
                raise ValueError(f"search.fixed.{name}: {err}") from None
        return self

    @model_validator(mode="after")
    def _grid_needs_a_grid(self) -> SweepConfig:
        if self.search.sampler == "grid" and self.search.space != "published_grid":
            raise ValueError(
                "search.sampler: 'grid' needs search.space: published_grid (the optuna "
                "space has continuous ranges); use 'tpe' or 'auto'"
            )
        return self

    @model_validator(mode="after")
    def _weights_need_pretrained(self) -> SweepConfig:
        if self.backbone_weights and not self.train.pretrained:
            raise ValueError("backbone_weights is set but train.pretrained is false")
        return self

    @model_validator(mode="after")
    def _replay_fits(self) -> SweepConfig:
        if self.replay:  # a study or configuration the table lacks fails before anything runs
            from tuner.replay.engine import replay_plan

            replay_plan(self)
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def grid_search(self) -> bool:
        """Every point of the published grid, in order (else TPE samples the space)."""
        sampler = self.search.sampler
        return sampler == "grid" or (sampler == "auto" and self.search.space == "published_grid")

    @property
    def final_epochs(self) -> int:
        return self.final.epochs or self.tune.max_epochs

    @property
    def tracking_uri(self) -> str:
        """The MLflow store: ``tracking.uri``, or SQLite under ``out_dir`` (absolute, since
        Ray workers run in other folders)."""
        return self.tracking.uri or f"sqlite:///{(Path(self.out_dir).resolve() / 'mlflow.db')}"

    @property
    def artifact_root(self) -> str | None:
        """Artifacts beside the SQLite store by default; a server decides for itself."""
        if self.tracking.uri:
            return None
        return (Path(self.out_dir).resolve() / "mlartifacts" / self.experiment).as_uri()

    @property
    def storage_path(self) -> str:
        """Ray Tune's experiment storage (a shared filesystem or ``s3://`` on a cluster)."""
        return self.ray.storage_path or str((Path(self.out_dir) / "ray_results").resolve())

    @property
    def leaderboard_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def devices_per_trial(self) -> float:
        """What a trial holds, for device-hours: its GPUs, or its CPU cores without GPUs."""
        return self.resources.gpus_per_trial or self.resources.cpus_per_trial

    @property
    def threads_per_trial(self) -> int:
        return max(1, math.floor(self.resources.cpus_per_trial))


def _replay_names(replay: ReplaySettings, part: int) -> tuple[list[str], str]:
    """The replay table's tasks (``part`` 0) or methods (1), in table order, and their kind
    as an error names it (with the table)."""
    from tuner.replay.engine import replay_table

    names = dict.fromkeys(study[part] for study in replay_table(replay).studies())
    return list(names), f"{('task', 'method')[part]} of replay table {replay.source}"


def _expand(values: list[str], valid: list[str], kind: str) -> list[str]:
    """Expand shell wildcards (``synth/*``) and reject unknown names, keeping order."""
    import fnmatch

    out: list[str] = []
    for value in values:
        matches = [v for v in valid if fnmatch.fnmatchcase(v, value)]
        if not matches:
            raise ValueError(unknown_message(kind, value, valid))
        out.extend(m for m in matches if m not in out)
    return out


def _expand_tasks(values: list[str]) -> list[str]:
    """Registry wildcards as :func:`_expand`, plus ``folder:<path>`` user tasks (made absolute,
    so Ray workers in other folders find them) and ``@<n>[#<fold>]`` subset suffixes."""
    from tuner.data.subsets import parse_task
    from tuner.data.vtab import DataError

    out: list[str] = []
    for value in values:
        try:
            ref = parse_task(value)
            base, suffix = ref.base, ref.suffix
            if base.startswith("folder:"):
                bases = [f"folder:{Path(base.removeprefix('folder:')).absolute()}"]
            else:
                bases = _expand([base], list_tasks(), "task")
            for task in (b + suffix for b in bases):
                get_task(task)  # reads a user folder's classes: a bad folder fails here
                out.extend([task] if task not in out else [])
        except (KeyError, DataError) as err:
            raise ValueError(str(err.args[0]) if err.args else str(err)) from None
    return out


def parse_config(data: dict[str, Any], source: str = "<config>") -> SweepConfig:
    """Validate a config dict; errors become one ``ConfigError`` listing each field path."""
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            path = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r})" if e["type"] not in ("missing",) and "input" in e else ""
            lines.append(f"  {path}: {msg}{got}" if "unknown" not in msg else f"  {path}: {msg}")
        raise ConfigError(f"{source}: invalid sweep config\n" + "\n".join(lines)) from None


def load_config(
    path: Path | None, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> SweepConfig:
    """Read ``path`` (default: the built-in quickstart, or only ``preset`` when one is given),
    lay it over ``preset``'s config (``tuner/presets``) and apply top-level overrides."""
    from tuner.presets import deep_merge, preset_data

    data: dict[str, Any] = {}
    if preset:
        try:
            data = preset_data(preset)
        except (KeyError, ValueError) as err:
            raise ConfigError(str(err.args[0])) from None
    if path is not None or not preset:
        path = path or QUICKSTART
        if not path.exists():
            raise ConfigError(f"{path}: no such sweep config")
        try:
            own = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(own, dict):
            raise ConfigError(f"{path}: a sweep config is a mapping, got {type(own).__name__}")
        data = deep_merge(data, own)
    for key, value in (overrides or {}).items():
        _set_path(data, key.split("."), value)
    source = " over ".join(str(s) for s in (path, preset and f"preset {preset}") if s)
    return parse_config(data, source)


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
