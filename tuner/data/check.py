"""``petl-sweep data check ROOT``: find every problem in a data root before a sweep does.

A sweep that dies on image 9,000 of sun397's test split after an hour of tuning wastes the
cluster; a sweep that silently trains a 397-way head on 396 labels wastes the paper. So this
walks the root like the loaders would (VTAB-1k split files, the synth suite, VPT's FGVC JSON)
and reports, per task, *every* problem rather than the first: bad lines, labels outside the
registry's class count, missing or undecodable images, empty splits. Fewer distinct labels
than the registry expects is a warning (a small split may miss a class); the rest are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from tuner.data.fgvc import FGVC_SPLITS, image_dir, read_fgvc
from tuner.data.tasks import TASKS, layout_candidates
from tuner.data.vtab import SPLITS, DataError, _parse_line, split_path

SUITES = ("vtab1k", "synth", "fgvc")


@dataclass
class TaskReport:
    """What ``data check`` found in one task folder."""

    task: str
    folder: Path
    images: int = 0
    classes_seen: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def discover(root: Path) -> dict[str, Path]:
    """Task id -> folder for every task folder under ``root`` (ROOT/<suite>/<task>, and
    VTAB-1k tasks directly under ROOT as the community ships them)."""
    root = Path(root)
    found: dict[str, Path] = {}
    candidates = [("vtab1k", d) for d in sorted(root.iterdir()) if d.name not in SUITES]
    for suite in SUITES:
        if (root / suite).is_dir():
            candidates += [(suite, d) for d in sorted((root / suite).iterdir())]
    for suite, d in candidates:
        if not d.is_dir() or d.name.startswith("."):
            continue
        names = (
            [f"{s}.json" for s in FGVC_SPLITS] if suite == "fgvc" else [f"{s}.txt" for s in SPLITS]
        )
        if any((d / n).is_file() for n in names):
            found.setdefault(f"{suite}/{d.name}", d)
    return found


def _vtab_items(folder: Path, report: TaskReport, k: int | None) -> list[tuple[Path, int, str]]:
    items = []
    for split in SPLITS:
        path = split_path(folder, split)
        if not path.is_file():
            report.errors.append(f"split file {path} is missing; expected '<image> <label>' lines")
            continue
        lines = [
            (n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()
        ]
        report.splits[split] = len(lines)
        if not lines:
            report.errors.append(f"split file {path} is empty; expected '<image> <label>' lines")
        for lineno, line in lines:
            try:
                rel, label = _parse_line(path, lineno, line, None)
            except DataError as err:
                report.errors.append(str(err))
                continue
            if k is not None and label >= k:
                report.errors.append(
                    f"{path}:{lineno}: label {label} is out of range, expected [0, {k}) "
                    f"(the registry says {report.task} has {k} classes)"
                )
            items.append((folder / rel, label, f"{path}:{lineno}"))
    return items


def _fgvc_items(folder: Path, report: TaskReport, k: int | None) -> list[tuple[Path, int, str]]:
    problems: list[DataError] = []
    items = read_fgvc(folder, folder.name, problems)
    report.errors += [str(p) for p in problems]
    if not image_dir(folder, folder.name).is_dir():
        report.errors.append(f"image folder {image_dir(folder, folder.name)} is missing")
    for split in FGVC_SPLITS:
        report.splits[split] = len(items[split])
    labels = {y for split in FGVC_SPLITS for _, y, _ in items[split]}
    if k is not None and len(labels) > k:
        report.errors.append(
            f"{folder}: {len(labels)} distinct labels across the JSON files, but the registry "
            f"says {k} classes; expected at most {k}"
        )
    return [item for split in FGVC_SPLITS for item in items[split]]


def check_task(task_id: str, folder: Path) -> TaskReport:
    """Every problem of one task folder (see the module docstring)."""
    folder = Path(folder)
    report = TaskReport(task_id, folder)
    if not folder.is_dir():
        report.errors.append(f"task folder {folder} does not exist")
        return report
    k = TASKS[task_id].num_classes if task_id in TASKS else None
    if k is None:
        report.warnings.append(f"{task_id} is not in the task registry; class count not checked")
    read = _fgvc_items if task_id.startswith("fgvc/") else _vtab_items
    items = read(folder, report, k)
    labels = {label for _, label, _ in items}
    report.classes_seen = len(labels)
    if k is not None and 0 < len(labels) < k:
        report.warnings.append(f"only {len(labels)} of the registry's {k} classes have examples")
    unique = {path: where for path, _, where in reversed(items)}  # first mention wins
    report.images = len(unique)
    for path, where in sorted(unique.items()):
        try:
            with Image.open(path) as im:
                im.verify()
        except FileNotFoundError:
            report.errors.append(f"{where}: image {path} is missing")
        except Exception as err:  # PIL raises many types for bad bytes
            report.errors.append(f"{where}: image {path} cannot be decoded ({err})")
    return report


def check_root(root: Path, tasks: list[str] | None = None) -> list[TaskReport]:
    """Reports for every task under ``root``, or only ``tasks`` (ids or bare names)."""
    root = Path(root)
    if not root.is_dir():
        return [TaskReport("(root)", root, errors=[f"data root {root} does not exist"])]
    found = discover(root)
    if not tasks:
        return [check_task(t, d) for t, d in found.items()]
    reports = []
    for want in tasks:
        match = [t for t in found if want in (t, t.split("/", 1)[1])]
        if match:
            reports += [check_task(t, found[t]) for t in match]
        else:
            suite, _, name = want.rpartition("/")
            candidates = layout_candidates(root, suite or "vtab1k", name)
            folder = next((c for c in candidates if c.is_dir()), candidates[0])
            reports.append(check_task(want, folder))
    return reports


def render(reports: list[TaskReport], console: Console) -> bool:
    """Print one table per task and a summary line; True when there is no error."""
    for r in reports:
        table = Table(title=f"{r.task}  ({r.folder})", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("found", overflow="fold")
        table.add_row("images", str(r.images))
        table.add_row("classes seen", str(r.classes_seen))
        table.add_row("split sizes", ", ".join(f"{s}={n}" for s, n in r.splits.items()) or "–")
        for e in r.errors:
            table.add_row("[red]error[/]", e)
        for w in r.warnings:
            table.add_row("[yellow]warning[/]", w)
        if not r.errors and not r.warnings:
            table.add_row("problems", "[green]none[/]")
        console.print(table)
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    console.print(f"{len(reports)} task(s): {errors} error(s), {warnings} warning(s)")
    return errors == 0 and bool(reports)
