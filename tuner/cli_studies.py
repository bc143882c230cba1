"""The seed studies' commands: ``presets``, ``plan``, ``spaces show`` and ``analyze``.

They resolve or read, never train: a preset's protocol, the plan a sweep would run, the
shipped search spaces, and analyses of finished sweeps in MLflow. ``tuner.cli`` registers
them on the app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from tuner.cli_base import PresetOpt, SetOpt, console, fail, parse_pairs


def presets() -> None:
    """List the seed studies' protocols shipped as presets (run --preset NAME)."""
    from tuner.presets import list_presets

    table = Table(title="presets (petl-sweep run --preset NAME \\[sweep.yaml])")
    table.add_column("preset")
    table.add_column("what it runs")
    for name, text in list_presets().items():
        table.add_row(name, text)
    console.print(table)


def plan(
    config: Annotated[Path | None, typer.Argument(help="sweep.yaml (default: quickstart)")] = None,
    preset: PresetOpt = None,
    set_: SetOpt = [],  # noqa: B006
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
        fail(str(err))
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
        fail(f"--space must be optuna or published_grid, got {space!r}")
    try:
        domains = load_space(method, space, spaces_dir)  # type: ignore[arg-type]
    except (KeyError, ValueError, FileNotFoundError) as err:
        fail(str(err.args[0]) if err.args else str(err))
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


def _print_summary(title: str, summary: pd.DataFrame) -> None:
    shown = Table(title=title)
    for col in summary.columns:
        shown.add_column(str(col))
    for row in summary.itertuples(index=False):
        shown.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(shown)


def analyze(
    kind: Annotated[
        str, typer.Argument(help="agreement, ensemble, ... or all (every kind the records allow)")
    ],
    experiment: Annotated[list[str], typer.Option(help="MLflow experiment (repeatable)")],
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI")
    ] = "sqlite:///results/mlflow.db",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("results/analysis"),
    option: Annotated[
        list[str], typer.Option("--option", "-o", help="KEY=VALUE for the kind (repeatable)")
    ] = [],  # noqa: B006
) -> None:
    """A seed study's analysis of finished sweeps, from MLflow: table, plots, an MLflow run
    (and a section on the leaderboard page the next time it is built)."""
    from tuner.analysis.run import AnalysisError, run_all, run_analysis

    options = {k: str(v) for k, v in parse_pairs(option, "--option", typed=False).items()}
    try:
        if kind == "all":
            done, skipped = run_all(tracking_uri, experiment, out, options)
        else:
            output, _, _ = run_analysis(kind, tracking_uri, experiment, out, options)
            done, skipped = {kind: output}, {}
    except AnalysisError as err:
        fail(str(err))
    for output in done.values():
        _print_summary(output.title, output.summary)
    for name, why in skipped.items():
        console.print(f"[yellow]skipped {name}:[/] {why}", highlight=False)
    if not done:
        fail("no analysis could run on these records")
    console.print(f"written under {out}", soft_wrap=True)
