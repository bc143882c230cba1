"""``analyze scaling`` on planted final runs: accuracy vs n with folds merged, and the n at
which each PETL method reaches full fine-tuning (known by construction)."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from tuner.analysis.run import AnalysisError, run_analysis
from tuner.analysis.scaling import crossing, logged_train_size
from tuner.cli import app
from tuner.tracking.client import TrackingService

#: method -> task id -> test accuracy per seed (subsets: one seed per fold)
PLANTED = {
    "full": {
        "synth/objects@100#0": [0.40], "synth/objects@100#1": [0.50],
        "synth/objects@400#0": [0.60], "synth/objects@400#1": [0.70],
        "synth/objects": [0.85, 0.95],
    },
    "lora": {  # below full at 100, above from 400 on
        "synth/objects@100#0": [0.38], "synth/objects@100#1": [0.42],
        "synth/objects@400#0": [0.66], "synth/objects@400#1": [0.68],
        "synth/objects": [0.92, 0.96],
    },
    "bitfit": {  # above full at every size
        "synth/objects@100#0": [0.50], "synth/objects@100#1": [0.60],
        "synth/objects@400#0": [0.70], "synth/objects@400#1": [0.80],
        "synth/objects": [0.91, 0.93],
    },
    "linear": {  # below at every size
        "synth/objects@100#0": [0.30], "synth/objects@100#1": [0.30],
        "synth/objects@400#0": [0.40], "synth/objects@400#1": [0.40],
        "synth/objects": [0.50, 0.50],
    },
}  # fmt: skip


def _plant(uri: str, experiment: str, planted: dict) -> TrackingService:
    tracker = TrackingService(uri, experiment)
    for method, tasks in planted.items():
        for task, accs in tasks.items():
            for seed, acc in enumerate(accs):
                key = f"final/{task}/{method}/{seed}"
                tags = {"stage": "final", "task": task, "method": method, "seed": seed}
                tracker.start_run(key, key, tags)
                if "@" not in task:  # the sweep logs what it decoded: the full train split
                    splits = {"train800": 800, "val200": 200, "test": 1000}
                    tracker.log_dataset(
                        key, {"name": task, "digest": "d", "splits": splits}, "final"
                    )
                tracker.log_metrics(key, {"test/acc": acc}, 0)
                tracker.end_run(key)
    return tracker


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    uri = f"sqlite:///{root / 'm.db'}"
    tracker = _plant(uri, "sizes", PLANTED)
    output, files, run_id = run_analysis("scaling", uri, ["sizes"], root / "out")
    return uri, tracker, output, files, run_id


def test_accuracy_per_size_merges_folds_then_seeds(scaled):
    _, _, output, _, _ = scaled
    table = output.table.set_index(["method", "n"])
    assert sorted(set(output.table["n"])) == [100, 400, 800]  # plain task = its 800 images
    full100 = table.loc[("full", 100)]
    assert full100["test_acc"] == pytest.approx(0.45)
    assert full100["test_acc_std"] == pytest.approx(pd.Series([0.40, 0.50]).std())  # over folds
    assert (full100["folds"], full100["seeds"]) == (2, 2)
    full800 = table.loc[("full", 800)]
    assert full800["test_acc"] == pytest.approx(0.90)
    assert full800["test_acc_std"] == pytest.approx(pd.Series([0.85, 0.95]).std())  # over seeds
    assert table.loc[("lora", 400), "test_acc"] == pytest.approx(0.67)


def test_where_each_petl_method_reaches_full(scaled):
    _, _, output, _, _ = scaled
    summary = output.summary.set_index("method")
    assert summary.loc["lora", "reaches_full_at_n"] == "400"
    assert summary.loc["lora", "sizes_at_or_above"] == "400, 800"
    assert summary.loc["bitfit", "reaches_full_at_n"] == "always"
    assert summary.loc["linear", "reaches_full_at_n"] == "never"
    assert "full" not in summary.index and set(summary["sizes_compared"]) == {3}


def test_plot_and_mlflow_analysis_run(scaled):
    uri, tracker, _, files, run_id = scaled
    pngs = [f for f in files if f.suffix == ".png"]
    assert [p.name for p in pngs] == ["scaling_synth_objects.png"]
    assert pngs[0].read_bytes()[:4] == b"\x89PNG"
    runs = TrackingService(uri, "sizes", create=False).find({"analysis": "scaling"})
    assert [r["run_id"] for r in runs] == [run_id]
    plain = tracker.find({"stage": "final", "task": "synth/objects", "method": "full"})[0]
    subset = tracker.find({"stage": "final", "task": "synth/objects@100#0"})[0]
    assert logged_train_size(tracker, plain["run_id"]) == 800
    assert logged_train_size(tracker, subset["run_id"]) is None


def test_crossing_edge_cases():
    full = pd.Series({100: 0.5, 400: 0.6})
    assert crossing(pd.Series({100: 0.5, 400: 0.7}), full) == ("always", [100, 400])
    assert crossing(pd.Series({100: 0.4, 400: 0.59}), full) == ("never", [])
    assert crossing(pd.Series({100: 0.4, 400: 0.6, 800: 0.9}), full) == ("400", [400])


def test_one_size_only_is_a_clear_error_and_nothing_is_logged(scaled, tmp_path):
    uri = scaled[0]  # the same store (a fresh SQLite store costs seconds), another experiment
    one = {"full": {"synth/count@100#0": [0.5]}, "lora": {"synth/count@100#1": [0.6]}}
    _plant(uri, "single", one)
    with pytest.raises(AnalysisError, match=r"2 or more training-set sizes.*synth/count \(1 size"):
        run_analysis("scaling", uri, ["single"], tmp_path / "out")
    assert TrackingService(uri, "single", create=False).find({"stage": "analysis"}) == []
    result = CliRunner().invoke(
        app,
        ["analyze", "scaling", "--experiment", "single", "--tracking-uri", uri,
         "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert result.exit_code == 2 and "2 or more training-set sizes" in result.output


def _plan(preset: str) -> dict:
    import json

    result = CliRunner().invoke(app, ["plan", "--preset", preset, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_many_shot_presets_resolve_small_n_long_large_n_short():
    from tuner.data.subsets import parse_task

    small, large = _plan("many_shot"), _plan("many_shot_large")
    sizes = {
        name: {parse_task(r["study"].split(":")[0]).subset for r in plan["per_study"]}
        for name, plan in (("small", small), ("large", large))
    }
    counts = sorted({s.count for s in sizes["small"]})
    assert counts == [225, 450, 500, 900, 1000] and {s.fold for s in sizes["small"]} == {0, 1, 2}
    assert {s.fraction for s in sizes["large"]} == {None, 1.0}  # @1.0: the full train split
    assert min(s.count for s in sizes["large"] if s.count) > 1000
    assert (small["protocol"]["epochs"], small["protocol"]["warmup_epochs"]) == (100, 10.0)
    assert (large["protocol"]["epochs"], large["protocol"]["warmup_epochs"]) == (40, 4.0)
    trials = {r["study"].split(":")[1]: r["trials"] for r in small["per_study"]}
    assert trials["full"] == 12 and trials["lora"] == 12 and trials["fact_tk"] == 36  # 2x2x3 grid


def _png(path, value: int) -> str:
    from PIL import Image

    Image.new("RGB", (8, 8), (value, value, value)).save(path)
    return path.name


def test_vtab_subsets_draw_from_the_full_train_split_less_val(tmp_path):
    from tuner.data import DataError, load_task

    folder = tmp_path / "vtab1k" / "patch_camelyon"
    folder.mkdir(parents=True)
    names = [_png(folder / f"{i}.png", 20 * i) for i in range(12)]
    lines = {
        "train800": names[:4], "val200": names[4:6], "test": names[10:],
        "train800val200": names[:6], "train": names[:10],  # full split: holds val200's 4, 5
    }  # fmt: skip
    for split, files in lines.items():
        (folder / f"{split}.txt").write_text("".join(f"{f} {i % 2}\n" for i, f in enumerate(files)))
    assert len(load_task("vtab1k/patch_camelyon", tmp_path, 8).train[1]) == 4  # train800
    subset = load_task("vtab1k/patch_camelyon@6", tmp_path, 8)
    assert len(subset.train[1]) == 6 and len(subset.trainval[1]) == 8
    assert len(load_task("vtab1k/patch_camelyon@1.0", tmp_path, 8).train[1]) == 8  # 10 - val
    with pytest.raises(DataError, match=r"n=9 exceeds the train split size 8.*train\.txt"):
        load_task("vtab1k/patch_camelyon@9", tmp_path, 8)
