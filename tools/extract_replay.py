"""Write the shipped replay table ``petl_vision_vtab1k`` from PETL_Vision's git history.

The first seed study (Mai et al., https://github.com/OSU-MLB/PETL_Vision) publishes every
grid point it trained on VTAB-1k: one ``tune_summary.csv`` per task and method, a row per
configuration (a Python dict literal of its hyper-parameters) with its final validation top-1
(percent, 200 images). Read through ``git show`` at one commit, mapped to our task, method and
hyper-parameter names, those rows become a replay table (parquet) beside a JSON sidecar that
records the commit, the path pattern and every mapping, so each row can be re-derived.

    python tools/extract_replay.py --repo /work/.mirror/OSU-MLB+PETL_Vision/repo --commit 245d262
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_reference import METHOD_MAP, METHOD_NOTES, REPO_URL, ROOT, SKIPPED_FOLDERS, git

NAME = "petl_vision_vtab1k"
DEFAULT_MIRROR = Path("/work/.mirror/OSU-MLB+PETL_Vision/repo")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tuner/replay/tables"
PATTERN = ROOT + "/{task}/{method}/tune_summary.csv"
FIELD = "val_top1"

#: Their hyper-parameter name → ours (their experiment/config/method/*.yml keys; ours are the
#: keys of search_spaces/<method>.yaml). Every method's names are distinct, so one map serves.
PARAM_MAP = {
    "lr": "lr",
    "wd": "weight_decay",
    "lora_bottleneck": "rank",
    "adapter_bottleneck": "bottleneck",
    "adapter_scaler": "scale",
    "convpass_bottleneck": "bottleneck",
    "convpass_scaler": "scale",
    "convpass_xavier_init": "xavier_init",
    "fact_dim": "dim",
    "fact_scaler": "scale",
    "repadapter_bottleneck": "bottleneck",
    "repadapter_scaler": "scale",
    "vpt_num": "prompt_length",
}


def summary_files(repo: Path, commit: str) -> list[tuple[str, str]]:
    """(task folder, method folder) of every tune_summary.csv under ROOT, in path order."""
    found = []
    for path in git(repo, "ls-tree", "-r", "--name-only", commit, ROOT + "/").splitlines():
        parts = path[len(ROOT) + 1 :].split("/")
        if len(parts) == 3 and parts[2] == "tune_summary.csv":
            found.append((parts[0], parts[1]))
    return sorted(found)


def mapped_config(where: str, literal: str, grid_keys: set[str]) -> dict[str, Any]:
    """Their ``param_set`` (a dict literal) under our names; every key must be mapped and
    be a key of our published grid for the method."""
    theirs = ast.literal_eval(literal)
    if not isinstance(theirs, dict):
        raise SystemExit(f"{where}: param_set {literal!r} is not a dict")
    ours: dict[str, Any] = {}
    for key, value in theirs.items():
        name = PARAM_MAP.get(key)
        if name is None or name not in grid_keys:
            raise SystemExit(f"{where}: their {key!r} has no key in our grid {sorted(grid_keys)}")
        ours[name] = value
    return ours


def extract(repo: Path, commit: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table's rows (task, method, config JSON, val_acc fraction) and its sidecar."""
    from tuner.sweep.spaces import load_space

    sha = git(repo, "rev-parse", commit).strip()
    rows: list[dict[str, Any]] = []
    method_map: dict[str, str] = {}
    used_params: dict[str, dict[str, str]] = {}
    off_grid: dict[str, int] = {}
    for task, method in summary_files(repo, sha):
        if task in SKIPPED_FOLDERS:
            continue
        name = METHOD_MAP.get(method)
        if name is None:
            raise SystemExit(f"{method}: not in extract_reference.METHOD_MAP")
        method_map[method] = name
        grid = load_space(name, "published_grid")
        path = PATTERN.format(task=task, method=method)
        for i, line in enumerate(csv.DictReader(io.StringIO(git(repo, "show", f"{sha}:{path}")))):
            where = f"{path} row {i + 1}"
            config = mapped_config(where, line["param_set"], set(grid))
            for theirs in ast.literal_eval(line["param_set"]):
                used_params.setdefault(name, {})[theirs] = PARAM_MAP[theirs]
            if any(v not in grid[k].args for k, v in config.items()):
                off_grid[name] = off_grid.get(name, 0) + 1
            rows.append(
                {
                    "task": f"vtab1k/{task}",
                    "method": name,
                    "config": json.dumps(config, sort_keys=True),
                    "val_acc": round(float(line[FIELD]) / 100.0, 6),
                }
            )
    sidecar = {
        "name": NAME,
        "title": "PETL_Vision VTAB-1k grids: every configuration's final validation accuracy "
        "(Mai et al.)",
        "source": {
            "repo": REPO_URL,
            "commit": sha,
            "path": PATTERN,
            "field": FIELD,
            "units": "percent in the source, a fraction here (val_acc = val_top1 / 100)",
            "config_field": "param_set (a Python dict literal), keys renamed by param_map",
        },
        "epochs": 100,
        "curves": False,
        "validation_images": 200,
        "rows": len(rows),
        "method_map": dict(sorted(method_map.items())),
        "method_notes": {m: n for m, n in METHOD_NOTES.items() if m in method_map},
        "param_map": {m: dict(sorted(p.items())) for m, p in sorted(used_params.items())},
        "off_our_grid": off_grid,
        "skipped": {"folders": SKIPPED_FOLDERS},
    }
    return rows, sidecar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_MIRROR, help="PETL_Vision git dir")
    parser.add_argument("--commit", default="245d262")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the table")
    args = parser.parse_args()
    import pandas as pd

    rows, sidecar = extract(args.repo, args.commit)
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / f"{NAME}.parquet"
    pd.DataFrame(rows).to_parquet(table, index=False, compression="zstd")
    (args.out / f"{NAME}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    studies = len({(r["task"], r["method"]) for r in rows})
    print(f"{table}: {len(rows)} rows, {studies} studies ({table.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
