"""The ``petl-sweep`` command line (typer).

``run`` is the whole pipeline; the other commands expose its parts: the method registry
(``methods``, ``params``), the data (``data synth``, ``data check``) and the tiny backbone's
pretraining (``pretrain``). Errors a user can fix print one clear message and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from tuner.util import unknown_message

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Synthetic data and data folders.")
app.add_typer(data_app, name="data")
console = Console()


def _fail(message: str, code: int = 2) -> None:
    """One clear message, no traceback: exit 2 for usage/config, 1 for data and weights."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def parse_pairs(pairs: list[str], option: str = "--set", typed: bool = True) -> dict[str, Any]:
    """The one ``KEY=VALUE`` parser: values are YAML scalars (numbers, bools, lists) when
    ``typed``, else kept as strings (environment variables); a pair without ``=`` exits 2."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"{option} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value) if typed else value
    return out


PresetOpt = Annotated[
    str | None,
    typer.Option(help="a seed study's protocol (petl-sweep presets); the file is laid over it"),
]


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="sweep.yaml (default: quickstart)")] = None,
    preset: PresetOpt = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="override, e.g. tune.num_samples=4")
    ] = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="live progress table")] = True,
    resume: Annotated[
        bool,
        typer.Option(help="continue interrupted studies with Tuner.restore (finished trials stay)"),
    ] = False,
) -> None:
    """Tune every (task, method), retrain the best configs, print the leaderboard."""
    from tuner.config import ConfigError, load_config

    try:
        cfg = load_config(config, parse_pairs(set_), preset)
    except (ConfigError, FileNotFoundError) as err:
        _fail(str(err))
    from tuner.backbones.weights import WeightsMismatchError
    from tuner.data.vtab import DataError
    from tuner.sweep.pipeline import run_pipeline
    from tuner.tracking.buffered import TrackingError

    try:
        result = run_pipeline(
            cfg, console, live=progress and console.is_terminal, resume=resume, source=config
        )
    except (DataError, WeightsMismatchError, TrackingError) as err:
        _fail(str(err), 1)
    if result.failed or not result.outputs:
        raise typer.Exit(1)


@app.command()
def leaderboard(
    experiment: Annotated[list[str], typer.Option(help="MLflow experiment (repeatable)")],
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI")
    ] = "sqlite:///results/mlflow.db",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/leaderboard"),
    log: Annotated[bool, typer.Option(help="log a leaderboard run to the first experiment")] = True,
    reference: Annotated[
        list[str],
        typer.Option(
            help="published numbers beside ours, matched on task, method and backbone: "
            "a shipped name (petl_vision) or a JSON path (repeatable)"
        ),
    ] = [],  # noqa: B006
) -> None:
    """Rebuild the leaderboard from MLflow (any server, one or several sweeps)."""
    from tuner.leaderboard.build import build, publish

    try:
        paths, tracker = build(
            tracking_uri, experiment, out, "petl-sweep: " + " + ".join(experiment), reference
        )
    except ValueError as err:
        _fail(str(err))
    if log:
        publish(tracker, paths, "+".join(experiment))
    console.print(paths["markdown"].read_text(), soft_wrap=True, highlight=False)
    console.print(f"written: {', '.join(str(p) for p in paths.values())}", soft_wrap=True)


@app.command()
def analyze(
    kind: Annotated[str, typer.Argument(help="agreement")],
    experiment: Annotated[list[str], typer.Option(help="MLflow experiment (repeatable)")],
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI")
    ] = "sqlite:///results/mlflow.db",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/analysis"),
) -> None:
    """A seed study's analysis of finished sweeps, from MLflow: table, plots, an MLflow run."""
    from tuner.analysis.run import run_analysis

    try:
        table, files, _ = run_analysis(kind, tracking_uri, experiment, out)
    except ValueError as err:
        _fail(str(err))
    numeric = table.select_dtypes("number").columns.drop("seeds", errors="ignore")
    mean = table.groupby(["method_a", "method_b"])[list(numeric)].mean().reset_index()
    shown = Table(title=f"{kind}: mean over {table['task'].nunique()} task(s)")
    for col in mean.columns:
        shown.add_column(col)
    for row in mean.itertuples(index=False):
        shown.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(shown)
    console.print(f"written: {', '.join(str(p) for p in files)}", soft_wrap=True)


@app.command()
def ui(
    config: Annotated[Path | None, typer.Argument(help="sweep.yaml (default: quickstart)")] = None,
    experiment: Annotated[str | None, typer.Option(help="default: the sweep's")] = None,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    set_: Annotated[list[str], typer.Option("--set", help="override, e.g. out_dir=x")] = [],  # noqa: B006
) -> None:
    """Open the MLflow UI on the sweep's store, at its runs table (127.0.0.1 only)."""
    from tuner.config import ConfigError, load_config
    from tuner.tracking.ui import UIError, experiment_id, is_server, runs_url, start_ui

    try:
        cfg = load_config(config, parse_pairs(set_))
        uri, name = cfg.tracking_uri, experiment or cfg.experiment
        exp_id = experiment_id(uri, name)
        if is_server(uri):
            console.print(f"MLflow server: {runs_url(uri, exp_id)}", soft_wrap=True)
            return
        process = start_ui(uri, port)
    except (ConfigError, UIError) as err:
        _fail(str(err))
    console.print(
        f"MLflow UI on {uri}\nexperiment {name!r}: {runs_url(f'http://127.0.0.1:{port}', exp_id)}"
        "\n(Ctrl-C stops it)",
        soft_wrap=True,
    )
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()


@app.command()
def presets() -> None:
    """List the seed studies' protocols shipped as presets (run --preset NAME)."""
    from tuner.presets import list_presets

    table = Table(title="presets (petl-sweep run --preset NAME \\[sweep.yaml])")
    table.add_column("preset")
    table.add_column("what it runs")
    for name, text in list_presets().items():
        table.add_row(name, text)
    console.print(table)


@app.command()
def plan(
    config: Annotated[Path | None, typer.Argument(help="sweep.yaml (default: quickstart)")] = None,
    preset: PresetOpt = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="override, e.g. tune.num_samples=4")
    ] = [],  # noqa: B006
    epoch_seconds: Annotated[
        float | None, typer.Option(help="seconds per trial epoch, for a device-hours estimate")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """The resolved plan without running it: protocol, studies, trials and trial-epochs."""
    from tuner.config import ConfigError, load_config
    from tuner.sweep.estimate import describe_plan

    try:
        cfg = load_config(config, parse_pairs(set_), preset)
        info = describe_plan(cfg, epoch_seconds)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    console.print(
        f"[bold]{info['name']}[/]: {info['studies']} studies ({info['tasks']} tasks × "
        f"{len(info['methods'])} methods) on {info['backbone']}, search {info['search']['space']}"
    )
    proto = Table(title="protocol", show_header=False)
    for key, value in info["protocol"].items():
        proto.add_row(key, str(value))
    console.print(proto)
    epochs = info["trial_epochs"]
    console.print(
        f"trial-epochs: tuning {epochs['tune_expected']:,.0f} expected "
        f"(at most {epochs['tune_max']:,}), final {epochs['final']:,}"
    )
    if "device_hours" in info:
        hours = info["device_hours"]
        console.print(
            f"device-hours at {hours['epoch_seconds']} s/epoch × {hours['devices_per_trial']} "
            f"devices/trial: {hours['expected']} expected, at most {hours['max']}"
        )


spaces_app = typer.Typer(no_args_is_help=True, help="Search spaces: the shipped grids and domains.")
app.add_typer(spaces_app, name="spaces")


@spaces_app.command("show")
def spaces_show(
    method: Annotated[str, typer.Argument(help="registered method name")],
    space: Annotated[str, typer.Option(help="optuna or published_grid")] = "published_grid",
    spaces_dir: Annotated[Path | None, typer.Option(help="another search_spaces folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A method's search space with the common keys merged in (a grid: every value)."""
    from tuner.sweep.spaces import grid_points, load_space

    if space not in ("optuna", "published_grid"):
        _fail(f"--space must be optuna or published_grid, got {space!r}")
    try:
        domains = load_space(method, space, spaces_dir)  # type: ignore[arg-type]
    except (KeyError, ValueError, FileNotFoundError) as err:
        _fail(str(err.args[0]) if err.args else str(err))
    expanded = {k: list(d.args) if d.kind == "choice" else {d.kind: list(d.args)}
                for k, d in domains.items()}  # fmt: skip
    if as_json:
        print(json.dumps({"method": method, "space": space, "keys": expanded}))
        return
    table = Table(title=f"{method}: {space}")
    table.add_column("key")
    table.add_column("values / domain")
    for key, values in expanded.items():
        table.add_row(key, str(values))
    console.print(table)
    if space == "published_grid":
        console.print(f"{len(grid_points(domains))} grid points")


@app.command()
def methods() -> None:
    """List every registered PETL method with its paper and hyper-parameters."""
    from tuner.methods.describe import describe_methods

    table = Table(title="PETL methods")
    for col in ("name", "description", "paper", "hyper-parameters (default)"):
        table.add_column(col)
    for m in describe_methods():
        hp = ", ".join(f"{k}={v['default']}" for k, v in m["hparams"].items())
        table.add_row(m["name"], m["description"], m["paper"], hp or "–")
    console.print(table)


@app.command()
def backbones(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List backbone presets with their timm name and preprocessing (nothing downloads)."""
    from tuner.backbones.timm_models import preset_table

    rows = preset_table()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="backbone presets (any timm ViT name works too)")
    for col in ("preset", "timm name", "input size", "mean", "std", "interpolation"):
        table.add_column(col)
    for r in rows:
        stats = [", ".join(f"{v:.3f}" for v in r[k]) for k in ("mean", "std")]
        size = "x".join(map(str, r["input_size"]))
        table.add_row(r["preset"], r["timm_name"], size, *stats, r["interpolation"])
    console.print(table)


@app.command()
def params(
    method: Annotated[str, typer.Option(help="registered method name")],
    backbone: Annotated[str, typer.Option(help="timm model name")] = "vit_base_patch16_224",
    num_classes: Annotated[int, typer.Option(help="classes of the head")] = 100,
    set_: Annotated[list[str], typer.Option("--set", help="hyper-parameter, e.g. rank=8")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Trainable parameter count of a method on a backbone (in total and without head)."""
    from tuner.methods.describe import count_params

    overrides = parse_pairs(set_)
    try:
        info = count_params(method, backbone, num_classes, overrides)
    except (KeyError, ValueError) as err:
        _fail(str(err.args[0]) if err.args else str(err))
    if as_json:
        print(json.dumps(info))
        return
    console.print(
        f"{info['method']} on {info['backbone']} ({info['num_classes']} classes, {info['hp']}): "
        f"{info['trainable_total'] / 1e6:.4f} M trainable, "
        f"{info['trainable_without_head'] / 1e6:.4f} M without the head"
    )


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="data root to write synth tasks into")] = Path(
        "data/synth"
    ),
    seed: Annotated[int, typer.Option(help="generation seed")] = 0,
    task: Annotated[list[str], typer.Option(help="task names (default: all)")] = [],  # noqa: B006
    overwrite: Annotated[bool, typer.Option(help="rewrite complete tasks too")] = False,
) -> None:
    """Write the synthetic suite in the VTAB-1k on-disk layout."""
    from tuner.data.synth import SYNTH_TASKS, write_synth_suite

    unknown = [t for t in task if t not in SYNTH_TASKS]
    if unknown:
        _fail(unknown_message("synth task(s)", unknown, list(SYNTH_TASKS)))
    paths = write_synth_suite(out, seed=seed, tasks=task or None, overwrite=overwrite)
    for path in paths:
        console.print(f"wrote {path}")


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="data root (ROOT/vtab1k/<task>, ROOT/<task>, ...)")],
    task: Annotated[list[str], typer.Option(help="only these tasks (id or name)")] = [],  # noqa: B006
) -> None:
    """Check every task under ROOT: splits, labels vs the registry, images; exit 1 on errors."""
    from tuner.data.check import check_root, render

    if not render(check_root(root, task or None), console):
        raise typer.Exit(1)


@app.command()
def pretrain(
    out: Annotated[
        Path | None, typer.Option(help="weights file (default: the shipped one)")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    epochs: Annotated[int | None, typer.Option(help="default: the shipped recipe")] = None,
    num_images: Annotated[int | None, typer.Option(help="default: the shipped recipe")] = None,
) -> None:
    """Pretrain the tiny ViT on the synthetic upstream task (the shipped recipe)."""
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler()])
    from tuner.backbones.pretrain import pretrain as run_pretrain
    from tuner.backbones.timm_models import TINY_WEIGHTS

    kwargs: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        kwargs["epochs"] = epochs
    if num_images is not None:
        kwargs["num_images"] = num_images
    metrics = run_pretrain(out or TINY_WEIGHTS, **kwargs)
    console.print(metrics)


job_app = typer.Typer(no_args_is_help=True, help="Ray jobs on a cluster: status, logs, stop.")
app.add_typer(job_app, name="job")
AddressOpt = Annotated[
    str,
    typer.Option(envvar="RAY_API_SERVER_ADDRESS", help="Ray dashboard, e.g. http://HEAD:8265"),
]
TokenOpt = Annotated[
    Path | None,
    typer.Option(help="Ray auth token file (default: RAY_AUTH_TOKEN or ~/.ray/auth_token)"),
]


@app.command()
def submit(
    config: Annotated[Path, typer.Argument(help="sweep.yaml to run on the cluster")],
    address: AddressOpt,
    working_dir: Annotated[
        Path | None, typer.Option(help="upload this folder (the project) with the job")
    ] = None,
    token_file: TokenOpt = None,
    env: Annotated[list[str], typer.Option(help="KEY=VALUE for the job")] = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="follow the logs until the job ends")] = True,
    timeout: Annotated[float | None, typer.Option(help="stop following after seconds")] = None,
) -> None:
    """Submit a sweep as a Ray job (``python -m tuner run sweep.yaml`` on the cluster)."""
    from tuner.config import ConfigError
    from tuner.submit import SubmitError, client_for
    from tuner.submit import submit as submit_job
    from tuner.submit import wait as wait_job

    pairs = parse_pairs(env, "--env", typed=False)
    try:
        job_id = submit_job(
            config, address, working_dir=working_dir, token_file=token_file, env=pairs
        )
    except (ConfigError, FileNotFoundError, SubmitError) as err:
        _fail(str(err))
    console.print(f"submitted job [bold]{job_id}[/] to {address}")
    if not wait:
        return
    client = client_for(address, token_file)
    status = wait_job(client, job_id, timeout, on_logs=lambda text: print(text, end=""))
    console.print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _job_call(address: str, token_file: Path | None, call: str, job_id: str) -> Any:
    """One JobSubmissionClient call; Ray's errors (unknown job, bad token) exit cleanly."""
    from tuner.submit import SubmitError, client_for

    try:
        return getattr(client_for(address, token_file), call)(job_id)
    except (RuntimeError, SubmitError) as err:
        _fail(f"job {job_id} at {address}: {err}")


@job_app.command("status")
def job_status(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Print a job's status."""
    status = _job_call(address, token_file, "get_job_status", job_id)
    console.print(str(status).rsplit(".", 1)[-1])


@job_app.command("logs")
def job_logs(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Print a job's logs so far."""
    print(_job_call(address, token_file, "get_job_logs", job_id), end="")


@job_app.command("stop")
def job_stop(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Ask Ray to stop a running job."""
    stopped = _job_call(address, token_file, "stop_job", job_id)
    console.print(f"job {job_id}: {'stop requested' if stopped else 'not running'}")
