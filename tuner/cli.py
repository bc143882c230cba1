"""The ``petl-sweep`` command line (typer).

``run`` is the whole pipeline; the other commands expose its parts: the method registry
(``methods``, ``params``), the data (``data synth``, ``data check``) and the tiny backbone's
pretraining (``pretrain``); ``tuner.cli_studies`` adds the studies' commands (``presets``,
``plan``, ``spaces``, ``analyze``) and ``tuner.cli_jobs`` the cluster ones (``submit``,
``job``). Errors a user can fix print one clear message and exit 2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tuner import cli_jobs, cli_replay, cli_studies
from tuner.cli_base import PresetOpt, SetOpt, console, fail, parse_pairs
from tuner.util import unknown_message

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Synthetic data and data folders.")
app.add_typer(data_app, name="data")


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="sweep.yaml (default: quickstart)")] = None,
    preset: PresetOpt = None,
    set_: SetOpt = [],  # noqa: B006
    progress: Annotated[bool, typer.Option(help="live progress table")] = True,
    resume: Annotated[
        bool,
        typer.Option(help="continue interrupted studies with Tuner.restore (finished trials stay)"),
    ] = False,
    replay: Annotated[
        str | None,
        typer.Option(
            help="TABLE: recorded results stand in for training (a CSV/parquet path "
            "or petl_vision_vtab1k); the studies are the table's or the file's"
        ),
    ] = None,
    replay_experiment: Annotated[
        str | None, typer.Option(help="replay a finished sweep's MLflow experiment instead")
    ] = None,
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow URI of --replay-experiment")
    ] = "sqlite:///results/mlflow.db",
) -> None:
    """Tune every (task, method), retrain the best configs, print the leaderboard."""
    from tuner.config import ConfigError, load_config

    set_ = set_ + replay_pairs(replay, replay_experiment, tracking_uri, config or preset)
    try:
        cfg = load_config(config, parse_pairs(set_), preset)
    except (ConfigError, FileNotFoundError) as err:
        fail(str(err))
    from tuner.backbones.hub import WeightsUnavailableError
    from tuner.backbones.weights import WeightsMismatchError
    from tuner.data.vtab import DataError
    from tuner.sweep.pipeline import run_pipeline
    from tuner.sweep.preflight import PendingTimeout
    from tuner.sweep.shutdown import SweepInterrupted
    from tuner.tracking.buffered import TrackingError
    from tuner.tracking.lease import SweepLocked

    # MLflow's SQL store logs every failed statement with its traceback before raising it;
    # the sweep handles what it raises (a full disk is one line), so that log is noise
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    try:
        result = run_pipeline(
            cfg, console, live=progress and console.is_terminal, resume=resume, source=config
        )
    except ConfigError as err:  # found once the cluster is known (a request no node holds)
        fail(str(err))
    except (
        DataError, WeightsMismatchError, WeightsUnavailableError, TrackingError, SweepLocked,
        PendingTimeout,
    ) as err:  # fmt: skip
        fail(str(getattr(err, "cause", None) or err), 1)  # raised in an actor: its cause
    except SweepInterrupted as stop:
        command = resume_command(config, preset, set_)
        console.print(interrupted_block(stop, command), soft_wrap=True, highlight=False)
        raise typer.Exit(stop.exit_code) from None
    except Exception as err:  # a full disk, wherever it surfaced: one line, not a traceback
        from tuner.diskspace import disk_full_message

        message = disk_full_message(cfg.out_dir, err)
        if message is None:
            raise
        fail(message, 1)
    if result.failed or not result.outputs:
        raise typer.Exit(1)


def replay_pairs(
    table: str | None, experiment: str | None, tracking_uri: str, has_file: object
) -> list[str]:
    """``--replay`` as ``--set`` pairs (so ``--resume``'s command repeats them); with no sweep
    file, every study of the table, in a sweep named after it."""
    if not table and not experiment:
        return []
    if table and experiment:
        fail("--replay and --replay-experiment: give one table")
    if table:
        pairs = [f"replay.table={table}"]
    else:
        pairs = [f"replay.experiment={experiment}", f"replay.tracking_uri={tracking_uri}"]
    if not has_file:
        name = Path(table).stem if table else experiment
        pairs += [f"name=replay-{name}", "tasks=['*']", "methods=['*']"]
    return pairs


def resume_command(config: Path | None, preset: str | None, pairs: list[str]) -> str:
    """The exact ``petl-sweep run ... --resume`` that continues this sweep."""
    import shlex

    parts = ["petl-sweep", "run"] + ([str(config)] if config else [])
    parts += ["--preset", preset] if preset else []
    for pair in pairs:
        parts += ["--set", pair]
    return shlex.join([*parts, "--resume"])


def interrupted_block(stop: Any, command: str) -> str:
    """What a user reads after Ctrl-C / SIGTERM: what was kept and how to continue."""
    return (
        f"\n[bold yellow]Interrupted ({stop.signal_name}).[/] "
        f"{stop.trials_kept} trial(s) finished and are kept; {stop.trials_interrupted} "
        f"running trial(s) were stopped and continue from their last checkpoint; "
        f"{stop.finals_cancelled} final retrain(s) in flight will run again. "
        f"{stop.runs_closed} open MLflow run(s) were closed as KILLED (outcome=interrupted).\n"
        f"Continue with:\n  {command}"
    )


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
        fail(str(err))
    if log:
        publish(tracker, paths, "+".join(experiment))
    console.print(paths["markdown"].read_text(), soft_wrap=True, highlight=False)
    console.print(f"written: {', '.join(str(p) for p in paths.values())}", soft_wrap=True)


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
        fail(str(err))
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
def methods() -> None:
    """List every registered PETL method with its paper and hyper-parameters."""
    from tuner.methods.describe import describe_methods

    table = Table(title="PETL methods")
    for col in ("name", "description", "paper", "hyper-parameters (default; bounds | choices)"):
        table.add_column(col)
    for m in describe_methods():
        fields = []
        for k, v in m["hparams"].items():
            rule = v["bounds"] or " | ".join(map(str, v["choices"]))
            fields.append(f"{k}={v['default']}" + (f" ({rule})" if rule else ""))
        table.add_row(m["name"], m["description"], m["paper"], ", ".join(fields) or "–")
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
        fail(str(err.args[0]) if err.args else str(err))
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
        fail(unknown_message("synth task(s)", unknown, list(SYNTH_TASKS)))
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


# The seed studies' commands and the cluster ones live in their own modules.
for command in (cli_studies.presets, cli_studies.plan, cli_studies.analyze, cli_jobs.submit,
                cli_replay.replay):  # fmt: skip
    app.command()(command)
app.add_typer(cli_studies.spaces_app, name="spaces")
app.add_typer(cli_jobs.job_app, name="job")

# Delivering a sweep's winner (tuner.cli_models): models, register, export, predict.
from tuner import cli_models  # noqa: E402

for command in (cli_models.models, cli_models.register, cli_models.export, cli_models.predict):
    app.command()(command)
