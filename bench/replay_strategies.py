"""Choose the presets' search on the shipped VTAB-1k table, and report it on held-out tasks.

The table (PETL_Vision's 304 grids, 9,804 configurations, final val accuracy) is split by
task: even-indexed tasks (sorted names) *choose*, odd-indexed ones *report*. A study's warm
start only ever reads other tasks (leave-one-task-out), so a study never sees its own task.

1. Candidates on the choosing tasks (``--select-seeds`` seeds): TPE warm-started by the
   table prior (``tuner.replay.prior.prior_points``) or the engine's rule (the best
   configuration of the best other-task studies), ``top`` warm points, ``budget`` trials.
   The pick: the largest ``ratio_vs_grid`` with ``hit_rate`` >= ``--min-hit``. With
   ``top`` >= budget the run is the prior's order alone and the seed changes nothing.
2. Every candidate on the reporting tasks (``--select-seeds``: what other goals would take),
   then grid, random, the preset's search before (TPE, 8 trials) and now (``default``) and
   the pick with ``--seeds`` seeds, and their regret figure; TPE and the engine's warm start
   without a budget (each study's grid size) with ``--slow-seeds``. The JSON is written
   after each phase. (``petl-sweep replay petl_vision_vtab1k`` gives the whole table's.)

    python bench/replay_strategies.py --jobs 2            # the full run (bench/RESULTS.md)
    python bench/replay_strategies.py --quick             # a smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tuner.replay.compare import Strategy
from tuner.replay.plot import regret_figure
from tuner.replay.runner import compare
from tuner.replay.strategies import preset_strategy
from tuner.replay.summary import summarise
from tuner.replay.table import ReplayTable, load_table

HERE = Path(__file__).resolve().parent


def candidates(budgets: list[int], tops: list[int]) -> list[Strategy]:
    """The prior with ``top`` points then TPE (``top`` >= budget: the prior order alone), and
    the engine's warm rule with every other task's best then TPE."""
    out = []
    for budget in budgets:
        for top in tops:
            k = min(top, budget)
            out.append(Strategy(f"prior{k}/b{budget}", "tpe", "prior", k, budget))
        out.append(Strategy(f"best{budget}/b{budget}", "tpe", "best", budget, budget))
    return out


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "ratio_vs_grid",
        "ratio_vs_grid_ci",
        "hit_rate",
        "hit_rate_ci",
        "budget_ratio_vs_grid",
        "configs_per_study",
    )
    return {n: {k: e[k] for k in keep} for n, e in summary["strategies"].items()}


def split(table: ReplayTable) -> tuple[list, list]:
    tasks = sorted({t for t, _ in table.studies()})
    choose = set(tasks[0::2])
    studies = table.studies()
    return [s for s in studies if s[0] in choose], [s for s in studies if s[0] not in choose]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default="petl_vision_vtab1k")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--select-seeds", type=int, default=2)
    parser.add_argument("--slow-seeds", type=int, default=5, help="for unbudgeted tpe, warm")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--min-hit", type=float, default=0.92)
    parser.add_argument("--budgets", default="12,16,20,24")
    parser.add_argument("--tops", default="4,100")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 2 budgets, every 4th study")
    parser.add_argument("--out", type=Path, default=HERE / "replay_strategies.json")
    parser.add_argument("--plot", type=Path, default=HERE / "replay_regret.png")
    args = parser.parse_args()
    table = load_table(args.table)
    choose, report = split(table)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds, select_seeds = args.seeds, args.select_seeds
    if args.quick:
        choose, report, budgets, seeds, select_seeds = choose[::4], report[::4], budgets[1:3], 3, 2
        args.slow_seeds = 1
    tops = [int(t) for t in args.tops.split(",")]
    started = time.perf_counter()
    pool = candidates(budgets, tops)
    chosen_run = compare(
        table, pool, select_seeds, args.eps, studies=choose, jobs=args.jobs, horizon=0
    )
    on_choose = brief(summarise(chosen_run))
    fit = [n for n, e in on_choose.items() if e["hit_rate"] >= args.min_hit]
    pick_name = max(fit or on_choose, key=lambda n: on_choose[n]["ratio_vs_grid"])
    pick = next(s for s in pool if s.name == pick_name)
    selected_s = time.perf_counter() - started
    default, asha = preset_strategy()
    before = Strategy("tpe/b8 (preset before)", "tpe", budget=8)
    shown = [Strategy("grid", "grid"), Strategy("random", "random"), before, default]
    if (pick.warm, pick.warm_top, pick.budget) != (default.warm, default.warm_top, default.budget):
        shown.append(Strategy("pick:" + pick.name, "tpe", pick.warm, pick.warm_top, pick.budget))
    document: dict[str, Any] = {
        "table": args.table,
        "eps": args.eps,
        "min_hit": args.min_hit,
        "choose_tasks": sorted({t for t, _ in choose}),
        "report_tasks": sorted({t for t, _ in report}),
        "pick": pick.name,
        "on_choose": on_choose,
        "jobs": args.jobs,
        "seconds": {"select": round(selected_s, 1)},
    }

    def save(key: str, value: Any) -> None:  # after each phase: a long run keeps its parts
        document[key] = value
        document["seconds"][key] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(document, indent=1) + "\n")

    held_pool = compare(
        table, pool, select_seeds, args.eps, studies=report, jobs=args.jobs, horizon=0
    )
    save("candidates_on_report", brief(summarise(held_pool)))
    held = compare(table, shown, seeds, args.eps, asha, report, jobs=args.jobs, horizon=10)
    regret_figure(held, args.plot)
    document["plot"] = str(args.plot)
    save("on_report", summarise(held))
    slow = [Strategy("tpe", "tpe"), Strategy("warm", "tpe", warm="best", warm_top=3)]
    unbudgeted = compare(table, slow, args.slow_seeds, args.eps, asha, report, jobs=args.jobs)
    save("unbudgeted_on_report", summarise(unbudgeted))
    print(f"pick {pick.name}; {args.out}")
    for name in [s.name for s in shown]:
        e = document["on_report"]["strategies"][name]
        print(f"  report {name:24s} ratio {e['ratio_vs_grid']:5.2f}  hit {e['hit_rate']:.3f}")


if __name__ == "__main__":
    main()
