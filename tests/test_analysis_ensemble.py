"""``petl-sweep analyze ensemble`` on planted final runs whose ensembles are known exactly.

Three methods × three seeds on 60 test examples (3 classes). Run (method i, seed s) errs
on the block ``[10·((i+s) mod 3), +10)`` and, for bitfit and full, on a block of its own
at every seed. At any one seed the three methods' errors are disjoint, and so are one
method's errors across seeds outside its own block: a majority vote is then right
wherever at most one member errs. Wrong predictions are unconfident (margin 0.5) except
lora at seed 0, which errs *confidently* on ``[0, 10)`` where the others are right but
unconfident: there the mean probability follows lora and the vote does not.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tuner.analysis.ensemble import ensemble_table, load_members
from tuner.analysis.run import AnalysisError
from tuner.cli import app
from tuner.tracking.artifacts import predictions_bytes
from tuner.tracking.client import TrackingService

runner = CliRunner()
N, K, SEEDS = 60, 3, 3
LABELS = torch.arange(N) % K
METHODS = {"lora": 0, "bitfit": 1, "full": 2}
OWN_ERRORS = {"lora": range(0), "bitfit": range(30, 33), "full": range(33, 38)}
#: validation accuracy of each method's study: top-2 is lora, full (never by test)
VAL = {"lora": 0.9, "bitfit": 0.7, "full": 0.8}


def _run(method: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, logit margin) of one planted run."""
    start = 10 * ((METHODS[method] + seed) % 3)
    wrong = torch.zeros(N, dtype=torch.bool)
    wrong[start : start + 10] = True
    wrong[list(OWN_ERRORS[method])] = True
    margin = torch.where(wrong, 0.5, 8.0)
    if seed == 0:
        if method == "lora":
            margin[:10] = 8.0  # confidently wrong on [0, 10)
        else:
            margin[:10] = 0.5  # right, unconfidently
    return torch.where(wrong, (LABELS + 1) % K, LABELS), margin


def _plant(uri: str, experiment: str, seeds: dict[str, int], studies: bool = True) -> None:
    """Final runs (seeds per method) and, with ``studies``, each method's study run."""
    tracker = TrackingService(uri, experiment)
    for method, n_seeds in seeds.items():
        study = f"synth/count:{method}"
        if studies:
            tracker.start_run(study, study, {"stage": "tune", "study": study, "method": method})
            tracker.log_metrics(study, {"best_val_acc": VAL[method]}, 0)
            tracker.end_run(study)
        for seed in range(n_seeds):
            pred, margin = _run(method, seed)
            logits = torch.nn.functional.one_hot(pred, K).float() * margin[:, None]
            key = f"final/{method}/{seed}"
            tags = {"stage": "final", "task": "synth/count", "method": method, "seed": seed,
                    "study": study}  # fmt: skip
            tracker.start_run(key, key, tags)
            tracker.log_artifact_bytes(
                key, "test_predictions.parquet", predictions_bytes(logits, LABELS)
            )
            tracker.end_run(key)


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the module (creating an MLflow database costs seconds): ``ens`` is
    the full plant, ``noval`` has no study runs, ``short`` has mismatched seeds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'm.db'}"
    _plant(uri, "ens", dict.fromkeys(METHODS, SEEDS))
    _plant(uri, "noval", dict.fromkeys(METHODS, 2), studies=False)
    _plant(uri, "short", {"lora": 2, "bitfit": 1})
    return uri


def _analyze(uri: str, out, *args: str):
    return runner.invoke(app, ["analyze", "ensemble", "--tracking-uri", uri, "--out", str(out),
                               *args])  # fmt: skip


def test_ensemble_accuracies_of_planted_methods(uri, tmp_path):
    out = tmp_path / "a"
    result = _analyze(uri, out, "--experiment", "ens", "-o", "k=2")
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "ensemble.parquet")
    acc = {(r.kind, r.combiner, r.members): r for r in table.itertuples()}
    singles = {m: (N - 10 - len(OWN_ERRORS[m])) / N for m in METHODS}
    best = max(singles, key=singles.get)
    assert best == "lora" and set(table["best_single"]) == {"lora"}
    assert table["best_single_acc"].eq(singles["lora"]).all()
    # every method ensemble: the vote is always right; the mean probability follows the
    # confident lora on [0, 10) at seed 0, so it loses 10 of 3 × 60 seed-examples
    members = "full,bitfit,lora"  # registry order
    assert acc[("all", "vote", members)].acc == pytest.approx(1.0)
    assert acc[("all", "mean_prob", members)].acc == pytest.approx(170 / 180)
    # top-2 by validation: lora and full; two voters tie where they disagree, and the
    # tie-break by probability follows lora's confident error at seed 0 only
    assert acc[("top2", "vote", "lora,full")].acc == pytest.approx(170 / 180)
    assert acc[("top2", "mean_prob", "lora,full")].acc == pytest.approx(170 / 180)
    # seeds of one method: right except where all three seeds err (the method's own block)
    for method, own in OWN_ERRORS.items():
        for combiner in ("vote", "mean_prob"):
            assert acc[("seeds", combiner, method)].acc == pytest.approx(1 - len(own) / N)
    row = acc[("all", "vote", members)]
    assert row.gain == pytest.approx(1.0 - singles["lora"])
    assert row.better and not row.tied  # +0.167 on 60 examples: beyond the bootstrap
    summary = pd.read_parquet(out / "ensemble.summary.parquet").set_index(["kind", "combiner"])
    assert summary.loc[("seeds of best", "vote"), "acc"] == pytest.approx(1.0)
    assert summary.loc[("top2", "mean_prob"), "gain"] == pytest.approx(170 / 180 - 50 / 60)
    assert set(summary.index.get_level_values("kind")) == {"all", "top2", "seeds of best"}
    assert (out / "ensemble.png").stat().st_size > 0
    assert "0.944" in result.output  # the console summary


def test_bad_input_is_one_line_and_logs_nothing(uri, tmp_path):
    cases = {
        ("--experiment", "short"): "synth/count: methods have mismatched seeds",
        ("--experiment", "noval", "-o", "k=one"): "option k must be an integer >= 2",
    }
    for args, message in cases.items():
        result = _analyze(uri, tmp_path / "a", *args)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    for name in ("noval", "short"):
        assert TrackingService(uri, name, create=False).find({"stage": "analysis"}, None) == []
    # no study runs: ranking the top 2 needs validation accuracy, which is missing; with
    # k = the number of methods there is nothing to rank and the same records suffice
    groups = load_members([TrackingService(uri, "noval", create=False)])
    with pytest.raises(AnalysisError, match="no validation accuracy for full"):
        ensemble_table(groups, 2)
    assert set(ensemble_table(groups, 3)["kind"]) == {"all", "seeds"}
