"""Write ``tuner/leaderboard/references/petl_vision.json`` from PETL_Vision's git history.

The first seed study (Mai et al., "Lessons Learned from a Unifying Empirical Study of PEFT in
Visual Recognition", https://github.com/OSU-MLB/PETL_Vision) publishes one
``final_result.json`` per VTAB-1k task and method. Reading them through ``git show`` at one
commit (never a working tree) makes the shipped numbers reproducible: the JSON records the
commit, the path pattern and every name mapping, so anyone can re-derive each number.

    python tools/extract_reference.py --repo /work/.mirror/OSU-MLB+PETL_Vision/repo
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

REPO_URL = "https://github.com/OSU-MLB/PETL_Vision"
DEFAULT_MIRROR = Path("/work/.mirror/OSU-MLB+PETL_Vision/repo")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tuner/leaderboard/references/petl_vision.json"
ROOT = "tune_output/default_vtab/processed_vtab"
PATTERN = ROOT + "/{task}/{method}/final_result.json"

#: Their method folder → our registry name. Their adapters differ in init only where noted.
METHOD_MAP = {
    "linear": "linear",
    "full": "full",
    "bitfit": "bitfit",
    "ln": "layernorm",
    "difffit": "difffit",
    "ssf": "ssf",
    "vpt_shallow": "vpt_shallow",
    "vpt_deep": "vpt_deep",
    "lora": "lora",
    "rand_h_adapter": "adapter_houlsby",
    "lora_p_adapter": "adapter_pfeiffer",
    "adaptformer": "adaptformer",
    "convpass": "convpass",
    "repadapter": "repadapter",
    "fact_tk": "fact_tk",
    "fact_tt": "fact_tt",
}
#: Why a mapping is not a plain rename (from their experiment/config/method/*.yml).
METHOD_NOTES = {
    "rand_h_adapter": "Houlsby placement (after attention and MLP) with xavier init of both "
    "projections (experiment/config/method/rand_h_adapter.yml), as ours (init: xavier, the "
    "default)",
    "lora_p_adapter": "Pfeiffer placement (after the MLP) with lora_xavier init: xavier down, "
    "zero up (experiment/config/method/lora_p_adapter.yml), as ours (init: lora_xavier, the "
    "default); their rand_p_adapter (xavier up) has no final_result.json in this folder",
    "ln": "LayerNorm affine tuning",
}
#: Folders under ROOT that are not VTAB-1k tasks of the default protocol.
SKIPPED_FOLDERS = {
    "cifar_aug_norm": "a second CIFAR-100 run (by its name, augmented and normalised inputs; "
    "default_vtab_processed.yml has normalized: False), not the default VTAB-1k protocol"
}
BACKBONE = "vit_base_patch16_224.orig_in21k"
BACKBONE_NOTE = (
    "experiment/config/default_vtab_processed.yml: pretrained_weights vit_base_patch16_224_in21k, "
    "which experiment/build_model.py loads from Google's ViT-B_16_in21k.npz (the original "
    "ImageNet-21k weights, timm's .orig_in21k). Stored as the timm name: the leaderboard "
    "compares resolved names, so any preset that resolves to it matches"
)


def git(repo: Path, *args: str) -> str:
    """One git command's stdout: read-only plumbing, so a bare mirror is enough."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def result_files(repo: Path, commit: str) -> list[tuple[str, str]]:
    """(task folder, method folder) of every final_result.json under ROOT at ``commit``."""
    found = []
    for path in git(repo, "ls-tree", "-r", "--name-only", commit, ROOT + "/").splitlines():
        parts = path[len(ROOT) + 1 :].split("/")
        if len(parts) == 3 and parts[2] == "final_result.json":
            found.append((parts[0], parts[1]))
    return sorted(found)


def extract(repo: Path, commit: str = "HEAD") -> dict[str, Any]:
    """The reference document: source, backbone, every mapping, and per (task, method) the
    published ``avg_acc`` (percent, as published) under our task and method names."""
    from tuner.data.tasks import TASKS
    from tuner.methods import list_methods

    sha = git(repo, "rev-parse", commit).strip()
    ours = set(list_methods())
    task_map: dict[str, str] = {}
    method_map: dict[str, str] = {}
    skipped_methods: dict[str, str] = {}
    accuracy: dict[str, dict[str, float]] = {}
    for task, method in result_files(repo, sha):
        if task in SKIPPED_FOLDERS:
            continue
        task_id = f"vtab1k/{task}"
        if task_id not in TASKS:
            raise SystemExit(f"{task}: no task {task_id!r} in tuner.data.tasks.TASKS")
        task_map[task] = task_id
        name = METHOD_MAP.get(method)
        if name is None or name not in ours:
            skipped_methods[method] = "no petl-sweep method"
            continue
        other = next((m for m, n in method_map.items() if n == name and m != method), None)
        if other is not None:
            raise SystemExit(f"{method} and {other} would both give our {name!r}")
        method_map[method] = name
        blob = git(repo, "show", f"{sha}:{PATTERN.format(task=task, method=method)}")
        accuracy.setdefault(task_id, {})[name] = float(json.loads(blob)["avg_acc"])
    return {
        "name": "petl_vision",
        "title": "PETL_Vision: Lessons Learned from a Unifying Empirical Study of PEFT in "
        "Visual Recognition (Mai et al.)",
        "source": {
            "repo": REPO_URL,
            "commit": sha,
            "path": PATTERN,
            "field": "avg_acc",
            "units": "percent",
        },
        "backbone": BACKBONE,
        "backbone_note": BACKBONE_NOTE,
        "task_map": task_map,
        "method_map": dict(sorted(method_map.items())),
        "method_notes": {m: n for m, n in METHOD_NOTES.items() if m in method_map},
        "skipped": {"folders": SKIPPED_FOLDERS, "methods": skipped_methods},
        "accuracy": {t: dict(sorted(accuracy[t].items())) for t in sorted(accuracy)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=DEFAULT_MIRROR, help="PETL_Vision git dir")
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    document = extract(args.repo, args.commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    pairs = sum(len(v) for v in document["accuracy"].values())
    print(f"{args.out}: {len(document['accuracy'])} tasks, {pairs} (task, method) numbers")


if __name__ == "__main__":
    main()
