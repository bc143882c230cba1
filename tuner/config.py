"""The sweep configuration (``sweep.yaml``), validated with pydantic.

Every field is checked before a single trial starts: an unknown method or task names the
bad value and lists the valid ones, a wrong type names the field path (``tune.max_epochs``),
and unknown keys are rejected (a typo never silently falls back to a default).

The sections live beside their users and are assembled here: ``tune``/``search`` in
``tuner.search_settings``, ``train`` in ``tuner.training.settings`` (the ``TrialSpec`` of
every run carries it), ``replay`` in ``tuner.replay.settings``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
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
from tuner.replay.settings import ReplaySettings, replay_names
from tuner.search_settings import SearchSettings, TuneSettings
from tuner.training.settings import Strict, TrainSettings
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


class FinalSettings(Strict):
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


class ResourceSettings(Strict):
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0, description="fractions share one GPU, e.g. 0.25")
    max_concurrent_studies: int | None = Field(
        None,
        ge=1,
        description="studies open at once; default: enough for twice the slots' trials, plus "
        "two (trials wait for a slot, so Ray Tune reuses each ending trial's actor)",
    )
    autoscaling: bool | None = Field(
        None,
        description="whether the Ray cluster can add nodes (a request no node holds then waits "
        "instead of failing); default: detected (a local Ray never does)",
    )
    pending_timeout_s: float = Field(
        1800.0, gt=0, description="autoscaling: give up when no trial could start for this long"
    )


class TrackingSettings(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under out_dir")
    experiment: str | None = Field(None, description="default: the sweep name")


class RaySettings(Strict):
    address: str | None = Field(None, description="None: start a local Ray; 'auto': join one")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only")
    storage_path: str | None = Field(None, description="Ray Tune storage; shared FS or s3://")


class SweepConfig(Strict):
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
            return _expand(value, *replay_names(info.data["replay"], 1))
        expanded = _expand(value, methods.list_methods(), "method")
        return expanded

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("replay"):
            return _expand(value, *replay_names(info.data["replay"], 0))
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
    def experiment_path(self) -> str:
        """The sweep's one Ray Tune experiment under ``storage_path`` (what ``Tuner.restore``
        reads back, and where its saved state lies)."""
        return f"{self.storage_path.rstrip('/')}/{self.name}"

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
