"""``petl-sweep run``: the sweep, then the leaderboard, with a live display.

Kept apart from ``sweep.py`` (which owns Ray, Optuna and MLflow) so the display and the
file outputs can change without touching the orchestration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from tuner.config import SweepConfig
from tuner.leaderboard import build, publish
from tuner.progress import render
from tuner.sweep import run_sweep, tracking_uri


def run_pipeline(
    cfg: SweepConfig, console: Console, live: bool = True, resume: bool = False
) -> dict[str, Any]:
    """Run the sweep, write and log the leaderboard, print where everything is."""
    out_dir = Path(cfg.out_dir) / cfg.name
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

        result = run_sweep(cfg, on_tick=tick, resume=resume)
        display.update(render(last, cfg.name), refresh=True)
    try:
        paths, tracker = build(
            tracking_uri(cfg), [cfg.experiment], out_dir, f"petl-sweep: {cfg.name}"
        )
    except ValueError as err:
        console.print(f"[red]nothing to rank: {err}[/]")
        return result
    publish(tracker, paths, cfg.name)
    trials = [t for s in result["studies"].values() for t in s["trials"]]
    early = sum(t["outcome"] == "stopped_early" for t in trials)
    console.print(paths["markdown"].read_text(), soft_wrap=True, highlight=False)
    console.print(
        f"{len(trials)} trials ({early} stopped early by ASHA), {len(result['finals'])} final "
        f"runs in {result['wall_s']:.0f}s (reused from MLflow: {result['reused']['studies']} "
        f"studies, {result['reused']['finals']} final runs).\n"
        f"Leaderboard: {paths['markdown']}, {paths['html']} (plots: {paths['heatmap'].name}, "
        f"{paths['pareto'].name}), {paths['summary']}\n"
        f"MLflow: mlflow ui --backend-store-uri {tracking_uri(cfg)}  (experiment "
        f"{cfg.experiment!r})",
        soft_wrap=True,
        highlight=False,
    )
    result["paths"] = paths
    return result
