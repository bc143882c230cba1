"""WiSE-FT: the α path on a tiny ViT, and ``petl-sweep analyze wise`` on planted runs.

A "tuned" state is the method's initial trainable state plus seeded noise, so α has
something to move without any training.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
from _data_helpers import image_folder, png
from typer.testing import CliRunner

from tuner import methods
from tuner.analysis.interpolate import WeightPath
from tuner.analysis.run import AnalysisError
from tuner.cli import app
from tuner.methods.lora import LoRALinear
from tuner.tracking.artifacts import trainable_bytes
from tuner.tracking.client import TrackingService
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

runner = CliRunner()


def _noisy(state: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: t + 0.2 * torch.randn(t.shape, generator=g) for n, t in state.items()}


def _setup(tiny_backbone, name: str):
    """(pretrained backbone, model at the path, its reference tuned twin, tuned state)."""
    pretrained = tiny_backbone()
    model, method = copy.deepcopy(pretrained), methods.get(name)
    method.apply(model)
    tuned = _noisy(method.trainable_state_dict(model))
    reference, twin = copy.deepcopy(pretrained), methods.get(name)
    twin.apply(reference)
    twin.load_trainable_state_dict(reference, tuned)
    path = WeightPath(model, method, tuned, dict(pretrained.named_parameters()))
    return pretrained, path, reference.eval(), tuned


@torch.no_grad()
@pytest.mark.parametrize("name", ["bitfit", "lora"])
def test_alpha_ends_are_the_pretrained_backbone_and_the_tuned_model(tiny_backbone, name):
    pretrained, path, reference, _ = _setup(tiny_backbone, name)
    model = path.model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    path.set_alpha(0.0)
    torch.testing.assert_close(model.forward_features(x), pretrained.forward_features(x))
    path.set_alpha(0.5)
    middle = model(x)
    path.set_alpha(1.0)
    torch.testing.assert_close(model(x), reference(x))
    assert not torch.allclose(middle, reference(x), atol=1e-3)


@torch.no_grad()
def test_half_way_is_the_midpoint_in_place_and_a_halved_branch(tiny_backbone):
    pretrained, path, _, tuned = _setup(tiny_backbone, "bitfit")
    start = dict(pretrained.named_parameters())
    path.set_alpha(0.5)
    params = dict(path.model.named_parameters())
    biases = [n for n in tuned if n.endswith(".bias") and not n.startswith("head")]
    assert len(biases) > 10 and set(path.in_place) == set(biases)
    for name in biases:
        torch.testing.assert_close(params[name], (start[name] + tuned[name]) / 2)
    torch.testing.assert_close(params["head.weight"], tuned["head.weight"])  # always tuned

    _, path, _, tuned = _setup(tiny_backbone, "lora")
    path.set_alpha(0.5)
    branches = dict((n, m) for n, m in path.model.named_modules() if isinstance(m, LoRALinear))
    assert branches and not path.in_place
    for name, module in branches.items():
        full = tuned[f"{name}.lora_b"] @ tuned[f"{name}.lora_a"]
        torch.testing.assert_close(module.delta_weight(), 0.5 * full)
        torch.testing.assert_close(module.lora_a, tuned[f"{name}.lora_a"])  # scaled, not moved


def test_a_tensor_without_a_pretrained_value_cannot_interpolate(tiny_backbone):
    pretrained, model = tiny_backbone(), tiny_backbone()
    method = methods.get("bitfit")
    method.apply(model)
    start = {n: p for n, p in pretrained.named_parameters() if n != "blocks.0.mlp.fc1.bias"}
    with pytest.raises(AnalysisError, match=r"cannot interpolate: trained tensor blocks\.0\.mlp"):
        WeightPath(model, method, method.trainable_state_dict(model), start)
    linear = methods.get("linear")
    linear.apply(model := tiny_backbone())
    assert not WeightPath(model, linear, linear.trainable_state_dict(model), start).moves


def _plant(tmp_path: Path, uri: str) -> tuple[TrialSpec, dict[str, dict[str, torch.Tensor]]]:
    """An image-folder task with a shift set, and final runs of bitfit and lora on it."""
    root = image_folder(tmp_path / "pets", sizes=(2, 6, 8), size=32)
    for k, c in enumerate(("cat", "dog")):  # the shift set: other images of both classes
        for i in range(6):
            png(tmp_path / "shifted" / c / f"{i}.png", 900 + 10 * k + i, 32)
    spec = TrialSpec(task=f"folder:{root}", method="bitfit", stage="final", seed=0,
                     data_root=str(tmp_path / "data"),
                     shifts={"other": str(tmp_path / "shifted")})  # fmt: skip
    tracker, states = TrackingService(uri, "wise"), {}
    for method in ("bitfit", "lora"):
        run_spec = dataclasses.replace(spec, method=method)
        trainer = Trainer(run_spec)
        states[method] = _noisy(trainer.method.trainable_state_dict(trainer.model), seed=3)
        key = f"final/{method}"
        tracker.start_run(key, key, {"stage": "final", "task": spec.task, "method": method,
                                     "seed": 0})  # fmt: skip
        tracker.log_dict(key, run_spec.to_dict(), "config.json")
        meta = {"method": method, "hp": {}, "backbone": spec.backbone, "task": spec.task}
        tracker.log_artifact_bytes(
            key, "trainable.safetensors", trainable_bytes(states[method], meta)
        )
        tracker.end_run(key)
    broken = TrackingService(uri, "noshift")
    broken.start_run("f", "f", {"stage": "final", "task": spec.task, "method": "bitfit"})
    gone = dataclasses.replace(spec, shifts={"other": str(tmp_path / "gone")})
    broken.log_dict("f", gone.to_dict(), "config.json")
    broken.end_run("f")
    return spec, states


def _accuracies(spec: TrialSpec, state: dict[str, torch.Tensor]) -> dict[str, float]:
    trainer = Trainer(spec)
    trainer.method.load_trainable_state_dict(trainer.model, state)
    return {s: trainer.evaluate(s) for s in ("val", "test", "shift:other")}


def test_analyze_wise_on_planted_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    spec, states = _plant(tmp_path, uri)
    out = tmp_path / "a"
    result = runner.invoke(app, ["analyze", "wise", "--experiment", "wise", "--tracking-uri", uri,
                                 "--out", str(out), "-o", "alphas=1,0,0.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "wise.parquet")
    assert sorted(table["alpha"].unique()) == [0.0, 0.5, 1.0] and len(table) == 6
    for method, state in states.items():
        rows = table[table["method"] == method].set_index("alpha")
        # α = 1: the tuned model, rebuilt the way the sweep trained it
        tuned = _accuracies(dataclasses.replace(spec, method=method), state)
        # α = 0: the pretrained backbone under the tuned head (a linear probe's model)
        head = {k: v for k, v in state.items() if k.startswith("head.")}
        probe = _accuracies(dataclasses.replace(spec, method="linear"), head)
        for alpha, expected in ((1.0, tuned), (0.0, probe)):
            got = rows.loc[alpha, ["val_acc", "test_acc", "shift/other/acc"]].tolist()
            assert got == pytest.approx(list(expected.values())), (method, alpha)
        assert rows["shift_acc"].equals(rows["shift/other/acc"])  # one shift set: its mean
    best = pd.read_parquet(out / "wise.best.parquet")
    for run in best.itertuples():
        rows = table[table["run_id"] == run.run_id]
        top = rows[rows["val_acc"] == rows["val_acc"].max()]
        assert run.best_alpha == top["alpha"].max()  # best on val, ties to the larger α
        assert run.test_acc == top[top["alpha"] == run.best_alpha]["test_acc"].item()
    assert (out / "wise.png").stat().st_size > 0
    bad = runner.invoke(app, ["analyze", "wise", "--experiment", "noshift", "--tracking-uri", uri,
                              "--out", str(tmp_path / "b")])  # fmt: skip
    assert bad.exit_code == 2, bad.output
    assert "shift set 'other' is missing at" in " ".join(bad.output.split())
    assert TrackingService(uri, "noshift", create=False).find({"stage": "analysis"}, None) == []
