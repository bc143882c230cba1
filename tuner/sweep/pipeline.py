"""``petl-sweep run``: the sweep, then the leaderboard, with a live display.

Kept apart from the orchestration (``tuner.sweep.orchestrate``) so the display and the file
outputs can change without touching the scheduling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from tuner.config import SweepConfig
from tuner.leaderboard.build import build, publish
from tuner.records import first_line
from tuner.sweep.orchestrate import SweepResult, run_sweep
from tuner.sweep.progress import render
from tuner.sweep.utilisation import slot_utilisation


def ui_hint(cfg: SweepConfig, source: Path | None, experiment_id: str) -> str:
    """What to type (or open) to see this sweep in the MLflow UI."""
    from tuner.tracking.ui import is_server, runs_url

    if is_server(cfg.tracking_uri):
        return runs_url(cfg.tracking_uri, experiment_id)
    parts = ["petl-sweep ui"] + ([str(source)] if source else [])
    if Path(cfg.out_dir) != Path("results"):
        parts.append(f"--set out_dir={cfg.out_dir}")
    if cfg.tracking.experiment:
        parts.append(f"--experiment {cfg.experiment}")
    return " ".join(parts)


def run_pipeline(
    cfg: SweepConfig,
    console: Console,
    live: bool = True,
    resume: bool = False,
    source: Path | None = None,
) -> SweepResult:
    """Run the sweep, write and log the leaderboard, print where everything is.

    ``source``: the sweep file the user gave, so the printed ``petl-sweep ui`` names it."""
    out_dir = cfg.leaderboard_dir
    console.print(
        f"[bold]petl-sweep[/] {cfg.name}: {len(cfg.tasks)} tasks × {len(cfg.methods)} methods, "
        f"{cfg.tune.num_samples} trials/study, ASHA over {cfg.tune.max_epochs} epochs"
    )
    last: dict[str, Any] = {}
    with Live(console=console, auto_refresh=False, transient=False) as display:

        def tick(snapshot: dict[str, Any]) -> None:
            last.update(snapshot)
            if live:
                display.update(render(snapshot, cfg.name), refresh=True)

        result = run_sweep(
            cfg, on_tick=tick, resume=resume, notify=lambda m: console.print(f"[yellow]{m}[/]")
        )
        display.update(render(last, cfg.name), refresh=True)
    try:
        paths, tracker = build(
            cfg.tracking_uri,
            [cfg.experiment],
            out_dir,
            f"petl-sweep: {cfg.name}",
            planned=[(task, method) for task in cfg.tasks for method in cfg.methods],
            seeds=cfg.final.seeds,
        )
    except ValueError as err:
        console.print(f"[red]nothing to rank: {err}[/]")
        report_failures(result, console)
        return result
    use = slot_utilisation(tracker, cfg.name, result.started_at, result.wall_s, result.slots)
    publish(tracker, paths, cfg.name, {
        f"sweep/{k}": float(use[k]) for k in ("busy_fraction", "in_epoch_fraction", "slots",
                                              "study_wait_median_s", "study_setup_median_s",
                                              "checkpoint_slot_s")
    })  # fmt: skip
    result.outputs = paths
    trials = result.trials
    early = sum(t.outcome == "stopped_early" for t in trials)
    # markup off: a column such as "synth/count [shift noise]" is text, not a rich style tag
    console.print(paths["markdown"].read_text(), soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"{len(trials)} trials ({early} stopped early by ASHA), {len(result.finals)} final "
        f"runs in {result.wall_s:.0f}s (reused from MLflow: {result.reused_studies} "
        f"studies, {result.reused_finals} final runs).\n"
        f"Slots: {use['busy_fraction']:.2f} busy, {use['in_epoch_fraction']:.2f} inside epochs "
        f"({use['runs']} runs on {use['slots']} slots over {use['wall_s']:.0f} s); a study "
        f"waits {use['study_wait_median_s']:.1f} s (median) for its first trial\n"
        f"Leaderboard: {paths['markdown']}, {paths['html']} (plots: {paths['heatmap'].name}, "
        f"{paths['pareto'].name}), {paths['summary']}\n"
        f"MLflow UI: {ui_hint(cfg, source, tracker.experiment_id)}",
        soft_wrap=True,
        highlight=False,
    )
    if cfg.final.register_champions and result.finals and cfg.replay:
        console.print("champions not registered: a replay's final runs have no weights",
                      soft_wrap=True, markup=False, highlight=False)  # fmt: skip
    elif cfg.final.register_champions and result.finals:
        register_champions(cfg, console)
    report_failures(result, console)
    return result


def register_champions(cfg: SweepConfig, console: Console) -> None:
    """Register each task's champion (``final.register``) and print it with its URI; a
    failure here is reported, not raised: the sweep's results are already safe in MLflow."""
    from tuner.deliver import DeliverError
    from tuner.deliver.register import register_experiment

    try:
        done = register_experiment(cfg.tracking_uri, cfg.experiment, str(cfg.data_root))
    except Exception as err:  # registry refused, store full, ...: the sweep itself succeeded
        reason = str(err) if isinstance(err, DeliverError) else first_line(err)
        console.print(
            f"champions not registered: {reason}\n"
            f"(petl-sweep register --experiment {cfg.experiment} retries)",
            style="red", markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
        return
    console.print("[bold]Champions[/] (best validation accuracy per task), alias 'champion':")
    for d in done:
        c = d.champion
        held = "" if d.alias_version == d.version else f", alias kept on v{d.alias_version}"
        console.print(
            f"  {c.task}: {c.method} val {c.val_acc:.3f} test {c.test_acc_mean:.3f} → "
            f"{d.uri} (v{d.version}{held})",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip


def report_failures(result: SweepResult, console: Console) -> None:
    """Every study without a result, and why (the command then exits 1)."""
    if not result.failed:
        return
    console.print(f"[bold red]{len(result.failed)} failed:[/]", highlight=False)
    for study, reason in result.failed.items():
        console.print(f"  {study}: {reason}", soft_wrap=True, highlight=False)
