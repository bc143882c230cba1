"""The commands that deliver a sweep's winner: ``models``, ``register``, ``export``,
``predict``. ``tuner.cli`` registers them on the app.

They read a finished sweep from MLflow; nothing trains. Bad input (an unknown experiment,
task or method, a sweep without final runs) is one line and exit 2; a model or image that
cannot be read is one line and exit 1.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuner.cli_base import console, fail

TrackingOpt = Annotated[str, typer.Option(help="MLflow tracking URI")]
DEFAULT_URI = "sqlite:///results/mlflow.db"
ExperimentOpt = Annotated[str, typer.Option(help="MLflow experiment (the sweep's name)")]
DataRootOpt = Annotated[
    str | None, typer.Option(help="data root, if not where the sweep had it (rebuilds need it)")
]


def _champions(tracking_uri: str, experiment: str, task: str | None, method: str | None):
    from tuner.deliver import DeliverError
    from tuner.deliver.champion import select
    from tuner.deliver.register import open_experiment, sweep_candidates

    try:
        tracker = open_experiment(tracking_uri, experiment)
        found, runs = sweep_candidates(tracker)
        return tracker, select(found, task, method), runs
    except DeliverError as err:
        fail(str(err))
        raise  # unreachable: fail exits


def models(
    experiment: ExperimentOpt,
    tracking_uri: TrackingOpt = DEFAULT_URI,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per task: the champion (best validation accuracy), its val and test accuracy, its
    trainable and total parameters, and its model URI."""
    from tuner.deliver.champion import total_params
    from tuner.deliver.register import ALIAS, model_name
    from tuner.tracking import registry

    _, chosen, _ = _champions(tracking_uri, experiment, None, None)
    rows = []
    for c in chosen:
        name = model_name(c.sweep, c.task)
        held = registry.alias_version(tracking_uri, name, ALIAS)
        uri = registry.model_uri(name, ALIAS) if held else ""
        shipped = held is not None and held.run_id == c.run_id
        rows.append({
            "task": c.task, "champion": c.method + (f" ({c.variant})" if c.variant else ""),
            "val_acc": c.val_acc, "test_acc": c.test_acc_mean, "seeds": c.seeds,
            "trainable_params": c.trainable_params, "total_params": total_params(c),
            "model_uri": uri, "alias_on_this_sweep": shipped, "run_id": c.run_id,
        })  # fmt: skip
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{experiment}: champions (chosen on validation; test shown, never used)")
    for col in ("task", "champion", "val acc", "test acc", "trainable", "total", "model URI"):
        table.add_column(col, overflow="fold")  # a URI is copied, never cut with "…"
    for r in rows:
        uri = r["model_uri"] or "not registered (petl-sweep register)"
        if r["model_uri"] and not r["alias_on_this_sweep"]:
            uri += " (alias held by a better or other-protocol version)"
        table.add_row(
            r["task"], r["champion"], f"{r['val_acc']:.3f}", f"{r['test_acc']:.3f}",
            f"{r['trainable_params']:,}", f"{r['total_params']:,}", uri,
        )  # fmt: skip
    console.print(table)


def register(
    experiment: ExperimentOpt,
    tracking_uri: TrackingOpt = DEFAULT_URI,
    all_runs: Annotated[
        bool, typer.Option("--all", help="also give every other final run an MLflow model")
    ] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Register each task's champion as <sweep>-<suite>-<task>, alias 'champion' (moved only
    by a better validation accuracy under the same protocol). Idempotent."""
    from tuner.deliver import DeliverError
    from tuner.deliver.register import register_experiment

    try:
        done = register_experiment(tracking_uri, experiment, data_root, all_runs)
    except DeliverError as err:
        fail(str(err), 1 if "rebuild" in str(err) else 2)
    print_delivered(done)


def print_delivered(done: list) -> None:  # list[Delivered]
    """One line per champion: task, method, accuracies, version, URI and what the alias did."""
    for d in done:
        c = d.champion
        if d.moved:
            alias = "alias set"
        elif d.alias_version == d.version:
            alias = "alias already on it"
        else:
            alias = f"alias stays on version {d.alias_version} (not better on validation)"
        console.print(
            f"champion {c.task}: {c.method} (val {c.val_acc:.3f}, test {c.test_acc_mean:.3f}) "
            f"→ {d.uri} [version {d.version}{'' if d.created else ', existing'}; {alias}]",
            soft_wrap=True, highlight=False, markup=False,
        )  # fmt: skip


def export(
    experiment: ExperimentOpt,
    task: Annotated[str, typer.Option(help="task id, e.g. synth/objects")],
    out: Annotated[Path, typer.Option(help="folder to write")],
    method: Annotated[
        str | None, typer.Option(help="that method's best config instead of the champion")
    ] = None,
    tracking_uri: TrackingOpt = DEFAULT_URI,
    data_root: DataRootOpt = None,
) -> None:
    """Write model.safetensors, config.json and README.md to OUT: a plain timm checkpoint
    where the method merges, else the backbone and the method's tensors (needs petl-sweep)."""
    from tuner.deliver import DeliverError
    from tuner.deliver.register import package_candidate

    tracker, chosen, runs = _champions(tracking_uri, experiment, task, method)
    try:
        exported, _ = package_candidate(tracker, chosen[0], runs, out, data_root)
    except DeliverError as err:
        fail(str(err), 1)
    c = chosen[0]
    how = "loads with plain timm" if exported.plain else "needs petl-sweep to load"
    console.print(
        f"exported {c.task} {c.method} (val {c.val_acc:.3f}, test {c.test_acc:.3f}) to {out}: "
        f"{exported.config['merged']}; {how} (see {out / 'README.md'})",
        soft_wrap=True, highlight=False, markup=False,
    )  # fmt: skip


def _load(model: str, tracking_uri: str, data_root: str | None, tmp: Path):
    """A classifier from a ``models:/`` URI, an export or MLflow model folder, or a run id."""
    from tuner.deliver.package import load_package
    from tuner.deliver.register import about, open_experiment
    from tuner.tracking import registry

    path = Path(model)
    if model.startswith("models:/"):
        folder = registry.download_model(tracking_uri, model, tmp / "model")
        return load_package(registry.package_folder(folder))
    if path.is_dir():
        if (path / "MLmodel").exists():
            return load_package(registry.package_folder(path))
        return load_package(path)
    found = registry.find_run(tracking_uri, model)
    if found is None:
        fail(f"{model}: not a models:/ URI, a model folder, or a run at {tracking_uri}")
    experiment, run = found  # type: ignore[misc]
    model_id = registry.packaged_model(tracking_uri, model)
    if model_id:
        folder = registry.download_model(tracking_uri, f"models:/{model_id}", tmp / "model")
        return load_package(registry.package_folder(folder))
    if run["tags"].get("stage") != "final":
        fail(f"run {model} is not a final run (stage {run['tags'].get('stage')!r})")
    from tuner.deliver.champion import candidates
    from tuner.deliver.export import export_model
    from tuner.deliver.rebuild import rebuild_final

    tracker = open_experiment(tracking_uri, experiment)
    rebuilt = rebuild_final(tracker, run, data_root)
    found_c = [c for c in candidates(tracker.find({"stage": "tune"}), [run])]
    facts = about(found_c[0], rebuilt) if found_c else {"run_id": model}
    export_model(rebuilt, tmp / "package", facts)
    return load_package(tmp / "package")


def predict(
    model: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, a run id, or a model folder")],
    images: Annotated[list[str], typer.Argument(help="image files, folders or split files")],
    out: Annotated[Path | None, typer.Option(help="write the predictions as CSV")] = None,
    strict: Annotated[
        bool, typer.Option(help="exit 1 if any input is not a readable image")
    ] = False,
    tracking_uri: TrackingOpt = DEFAULT_URI,
    data_root: DataRootOpt = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
) -> None:
    """Predict images with a delivered model, preprocessed exactly as in training."""
    from tuner.deliver import DeliverError
    from tuner.deliver.images import ImageError, collect
    from tuner.deliver.predict import predict_files, write_csv

    try:
        inputs = collect(images)
    except ImageError as err:
        fail(str(err))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            classifier = _load(model, tracking_uri, data_root, Path(tmp))
        except DeliverError as err:
            fail(str(err), 1)
        result = predict_files(classifier, inputs, batch_size, console)
    for reason in result.skipped:
        console.print(f"[yellow]skipped[/] {reason}", highlight=False, soft_wrap=True)
    table = result.table
    if out is not None:
        write_csv(result, out)
    else:
        print(table.to_csv(index=False), end="")
    acc = result.accuracy
    console.print(
        f"{len(table)} images predicted, {len(result.skipped)} skipped"
        + (f"; accuracy {acc:.4f} against the split file's labels" if acc is not None else "")
        + (f"; written to {out}" if out is not None else ""),
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    if (strict and result.skipped) or table.empty:
        raise typer.Exit(1)
