"""Trained learning curves, replayed: does TPE + ASHA choose the grid's winner for a tenth of it?

Two phases, each resumable:

* ``record``: trains every point of the published grids of ``--methods`` on ``--tasks`` (the
  synth suite and the tiny pretrained ViT, ``--epochs`` epochs, the project's ``Trainer``
  with the default recipe) and logs every epoch's val AND test accuracy: a replay table with
  curves (``--table``, gzipped CSV). The last epoch's row also holds which test images the
  configuration got right (``test_correct``), so a replay can tell ties on test with the
  leaderboard's paired bootstrap. Trials run in a 2-process pool, one thread each; every
  finished trial is appended to ``<table>.jsonl`` first, so a killed record resumes where it
  stopped. To fit a 2-core machine the train split is ``<task>@<train>`` (a class-stratified
  subset) and test the first ``--test`` images of the task's test split; val is the task's 200.
* ``replay``: splits the tasks (sorted; even positions *choose*, odd ones *report*), replays
  candidate strategies on the choosing tasks with the project's own TPE (leave-one-task-out
  prior) and ASHA (every grace period and reduction factor of ``--graces`` and ``--rfs``),
  picks the cheapest whose chosen configuration ties the grid's on test on >= ``--min-tie``
  of the studies, and reports it, the grid and the standard strategies on the held-out tasks.

Cost is counted two ways: ``paid_epochs_ratio`` (the grid's trial-epochs over everything the
strategy ran in its whole budget: what a sweep pays, since it cannot know when it has hit)
and ``trial_epochs_ratio`` (up to the first trial within ``--eps`` of the grid's best val).

    python bench/trained_curves.py record            # 77 min on 2 cores (bench/RESULTS.md)
    python bench/trained_curves.py replay --jobs 2   # minutes; writes trained_curves.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TASKS = ["objects", "scenes", "textures", "cells", "count", "dsprites_loc"]
METHODS = ["bitfit", "lora", "adaptformer"]
_DATA: dict[str, Any] = {}


def grid(method: str) -> list[dict[str, Any]]:
    from tuner.sweep.spaces import grid_points, load_space

    return grid_points(load_space(method, "published_grid"))


def _task_data(task: str, root: Path, test: int) -> Any:
    """The task's splits, once per worker, test cut to its first ``test`` images."""
    if task not in _DATA:
        from tuner.backbones import input_spec
        from tuner.data import load_task

        spec = input_spec("vit_petl_tiny_patch8_32")
        data = load_task(task, root, spec.size, interpolation=spec.interpolation)
        x, y = data.test
        _DATA[task] = replace(data, test=(x[:test], y[:test]))
    return _DATA[task]


def train_config(job: tuple[str, str, dict, int, str, int]) -> list[dict[str, Any]]:
    """One grid point trained to the end: a table row per epoch."""
    task, method, hp, epochs, root, test = job
    import torch

    from tuner.training.settings import TrainSettings
    from tuner.training.spec import TrialSpec
    from tuner.training.trainer import Trainer

    torch.set_num_threads(1)
    spec = TrialSpec(task, method, hp, epochs=epochs, data_root=root, threads=1,
                     train=TrainSettings(record_test=True))  # fmt: skip
    trainer = Trainer(spec, _task_data(task, Path(root), test))
    rows = []
    for metrics in trainer.epochs():
        seconds = metrics["epoch_time_s"] + metrics.get("eval_time_s", 0.0)
        rows.append({"task": task, "method": method, "config": json.dumps(hp, sort_keys=True),
                     "epoch": int(metrics["epoch"]), "val_acc": metrics["val/acc"],
                     "test_acc": metrics.get("test/acc", 0.0), "epoch_s": seconds})  # fmt: skip
    logits, labels = trainer.predict("test")
    rows[-1]["test_correct"] = "".join("1" if c else "0" for c in (logits.argmax(1) == labels))
    return rows


def record(args: argparse.Namespace) -> None:
    from tuner.data import ensure_synth

    root = Path(args.data_root)
    ensure_synth(root, tasks=args.tasks)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    journal = sibling(args.table, ".jsonl")
    done: set[tuple[str, str, str]] = set()
    if journal.exists():
        for line in journal.read_text().splitlines():
            row = json.loads(line)
            done.add((row["task"], row["method"], row["config"]))
    tasks = [f"synth/{t}@{args.train}" for t in args.tasks]
    jobs = [(t, m, hp, args.epochs, str(root), args.test) for m in args.methods for t in tasks
            for hp in grid(m) if (t, m, json.dumps(hp, sort_keys=True)) not in done]  # fmt: skip
    total = len(jobs) + len(done)
    print(f"{len(done)} of {total} trials recorded; {len(jobs)} to train", flush=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool, journal.open("a") as out:
        for i, rows in enumerate(pool.map(train_config, jobs, chunksize=1), 1):
            out.write("".join(json.dumps(r) + "\n" for r in rows))
            out.flush()
            spent = time.perf_counter() - started
            last = rows[-1]
            print(f"[{i}/{len(jobs)} {spent:6.0f}s eta {spent / i * (len(jobs) - i):5.0f}s] "
                  f"{last['task']} {last['method']} {last['config']} "
                  f"val {last['val_acc']:.3f} test {last['test_acc']:.3f}", flush=True)  # fmt: skip
    write_table(journal, args.table)
    meta = {"command": "python bench/trained_curves.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
            "date": time.strftime("%Y-%m-%d"), "trials": total, "epochs": args.epochs,
            "record_s": round(time.perf_counter() - started),
            "train": args.train, "test": args.test}  # fmt: skip
    sibling(args.table, ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def sibling(table: Path, suffix: str) -> Path:
    """``trained_curves.jsonl`` beside ``trained_curves.csv.gz``."""
    return table.with_name(table.name.split(".")[0] + suffix)


def write_table(journal: Path, table: Path) -> None:
    """The journal's rows as a gzipped CSV replay table (one trial's rows once)."""
    import pandas as pd

    frame = pd.read_json(journal, lines=True, dtype={"config": str, "test_correct": str})
    frame = frame.drop_duplicates(["task", "method", "config", "epoch"], keep="first")
    frame.to_csv(table, index=False, compression="gzip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["record", "replay"])
    parser.add_argument("--table", type=Path, default=HERE / "trained_curves.csv.gz")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--select-seeds", type=int, default=5)
    parser.add_argument("--min-tie", type=float, default=0.9)
    parser.add_argument("--min-hit", type=float, default=0.0, help="0: the tie rate decides")
    parser.add_argument("--budgets", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    parser.add_argument("--tops", type=int, nargs="+", default=[0, 2, 100])
    parser.add_argument("--graces", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rfs", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--out", type=Path, default=HERE / "trained_curves.json")
    parser.add_argument("--plot", type=Path, default=HERE / "trained_curves_regret.png")
    args = parser.parse_args()
    if args.phase == "record":
        record(args)
    else:
        replay(args)


FIGURES = ("paid_epochs_ratio", "trial_epochs_ratio", "ratio_vs_grid", "hit_rate",
           "test_tie_rate", "configs_per_study")  # fmt: skip


def brief(summary: dict[str, Any]) -> dict[str, Any]:
    """Each strategy's figures (means, and the intervals of the first two)."""
    out = {}
    for name, entry in summary["strategies"].items():
        out[name] = {k: entry[k] for k in FIGURES}
        out[name].update({f"{k}_ci": entry[f"{k}_ci"] for k in FIGURES[:1] + FIGURES[4:5]})
    return out


def candidates(budgets: list[int], tops: list[int]) -> list[Any]:
    """TPE + ASHA with ``budget`` trials per study, warm-started by the table prior's first
    ``top`` configurations (leave-one-task-out; ``top`` >= budget: the prior's order alone)
    or not at all (``top`` 0)."""
    from tuner.replay.compare import Strategy

    out: dict[str, Strategy] = {}  # by name: prior2/b2 comes from top 2 and top 100 alike
    for budget in budgets:
        for top in tops:
            k = min(top, budget)
            name = f"prior{k}/b{budget}+asha" if k else f"tpe/b{budget}+asha"
            out[name] = Strategy(name, "tpe", "prior" if k else "", k, budget, asha=True)
    return list(out.values())


def replay(args: argparse.Namespace) -> None:
    from replay_strategies import split

    from tuner.replay.compare import Asha, Strategy
    from tuner.replay.plot import regret_figure
    from tuner.replay.runner import compare
    from tuner.replay.strategies import preset_strategy, standard
    from tuner.replay.summary import summarise
    from tuner.replay.table import load_table

    started = time.perf_counter()
    table = load_table(args.table)
    choose, report = split(table)
    pool = candidates(args.budgets, args.tops)
    document: dict[str, Any] = {
        "table": str(args.table), "record": _meta(args.table), "eps": args.eps,
        "min_tie": args.min_tie, "min_hit": args.min_hit, "seeds": args.seeds,
        "select_seeds": args.select_seeds, "choose_tasks": sorted({t for t, _ in choose}),
        "report_tasks": sorted({t for t, _ in report}), "studies": len(table.studies()),
        "grid_trials": sum(len(table.configs(*s)) for s in table.studies()),
        "command": "python bench/trained_curves.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "date": time.strftime("%Y-%m-%d"), "on_choose": {},
    }  # fmt: skip

    def save() -> None:  # after each phase, so a long run keeps its parts
        document["seconds"] = round(time.perf_counter() - started, 1)
        args.out.write_text(json.dumps(document, indent=1) + "\n")

    scored: list[tuple[Strategy, Asha, dict[str, Any]]] = []
    for grace in args.graces:
        for rf in args.rfs:
            asha = Asha(grace, rf)
            run = compare(table, pool, args.select_seeds, args.eps, asha, choose, args.jobs, True)
            figures = brief(summarise(run))
            document["on_choose"][f"grace{grace}/rf{rf}"] = figures
            scored += [(s, asha, figures[s.name]) for s in pool]
            save()
    fit = [x for x in scored if x[2]["test_tie_rate"] >= args.min_tie
           and x[2]["hit_rate"] >= args.min_hit]  # fmt: skip
    if fit:  # the cheapest that ties often enough
        pick, pick_asha, _ = max(fit, key=lambda x: x[2]["paid_epochs_ratio"])
    else:  # none does: the one that ties most often, then the cheapest of those
        pick, pick_asha, _ = max(
            scored, key=lambda x: (x[2]["test_tie_rate"], x[2]["paid_epochs_ratio"])
        )
    document["pick_met_min_tie"] = bool(fit)
    label = f"pick:{pick.name}@grace{pick_asha.grace_period}/rf{pick_asha.reduction_factor}"
    document["pick"] = label
    picked = Strategy(label, pick.proposer, pick.warm, pick.warm_top, pick.budget, True)
    # the reference below any search: each study trains only the prior's first point
    alone = Strategy("prior1/b1 (the prior's first point, no search)", "tpe", "prior", 1, 1)
    for where, studies in (("on_report", report), ("on_choose_all_seeds", choose)):
        shown = [picked, alone]
        run = compare(table, shown, args.seeds, args.eps, pick_asha, studies, args.jobs, True)
        document[where] = brief(summarise(run))
        save()
    default, preset_asha = preset_strategy()
    shown = standard(default, curves=True)
    run = compare(table, shown, args.seeds, args.eps, preset_asha, report, args.jobs, True)
    document["standard_on_report"] = brief(summarise(run))
    document["preset_asha"] = [preset_asha.grace_period, preset_asha.reduction_factor]
    regret_figure(run, args.plot)
    save()
    print(f"pick {label} (chosen on {document['choose_tasks']})")
    rows = {**document["on_report"], **document["standard_on_report"]}
    for name, e in rows.items():
        print(f"  report {name:44s} paid {e['paid_epochs_ratio']:6.2f}x  until-hit "
              f"{e['trial_epochs_ratio']:6.2f}x  hit {e['hit_rate']:.3f}  "
              f"test tie {e['test_tie_rate']:.3f}")  # fmt: skip


def _meta(table: Path) -> dict[str, Any]:
    path = sibling(table, ".meta.json")
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    main()
