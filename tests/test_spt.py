"""SPT: the budget is met exactly, masked entries never move, the sensitivity pass is cached.

The registry matrix (tests/test_methods_registry.py) already runs both SPT methods through
the generic checks; these are the properties specific to sensitivity-aware allocation.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from conftest import give_sensitivity

from tuner import methods
from tuner.data import load_task
from tuner.methods.base import count_trainable
from tuner.methods.spt.allocation import allocate, allocation_units, eligible_params
from tuner.methods.spt.allocation_table import allocation_bytes, allocation_png, allocation_totals
from tuner.methods.spt.method import SPTLinear
from tuner.methods.spt.sensitivity import (
    cache_path,
    compute_sensitivity,
    obtain_scores,
    save_scores,
)
from tuner.tracking.client import fetch_artifact
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

SPT = ["spt_lora", "spt_adapter"]
NUM_CLASSES = 5


def _batch(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _scores(model, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, NUM_CLASSES, (32,), generator=g)
    return compute_sensitivity(
        model, x, y, lambda b: b.float() / 127.5 - 1, seed=seed, batches=2, batch_size=16
    )


@pytest.mark.parametrize("name", SPT)
@pytest.mark.parametrize("budget", [0.001, 0.004, 0.02, 0.08, 0.3])
def test_realised_count_equals_the_budget(tiny_backbone, name, budget):
    """Tolerance zero: structured modules are traded against entries until τ is met."""
    model = tiny_backbone(NUM_CLASSES)
    method = give_sensitivity(methods.get(name, budget=budget), model, NUM_CLASSES)
    tau = round(budget * eligible_params(model))
    method.apply(model)
    _, without_head = count_trainable(model, method)
    assert without_head - model.embed_dim == tau  # the class token always trains
    assert method.allocation.realised == tau
    rows = method.allocation_rows()
    assert sum(r["trainable"] for r in rows) == tau
    if budget >= 0.02:  # a generous budget buys structured modules
        assert any(r["allocation"] in ("lora", "adapter") for r in rows)


def test_thresholds_decide_structured_unstructured_and_whole(tiny_backbone):
    """One hot matrix gets a module, a hot vector trains whole, a lukewarm one stays frozen."""
    model = tiny_backbone(NUM_CLASSES)
    units = {u.name: u for u in allocation_units(model)}
    scores = {
        u.param: torch.full_like(dict(model.named_parameters())[u.param], 1e-6)
        for u in units.values()
    }
    scores["blocks.2.mlp.fc1.weight"] += 1.0  # every entry of fc1 in block 2 is sensitive
    scores["blocks.1.norm1.weight"] += 2.0  # the whole vector: ≥ dim/β entries
    scores["blocks.1.norm2.bias"][:3] += 3.0  # 3 of 96 entries < 96/5: not trained whole
    scores["blocks.4.attn.qkv.weight"][200:210, :5] += 4.0  # 50 entries of v: unstructured
    costs = {
        n: 8 * (u.cols + u.rows[1] - u.rows[0]) for n, u in units.items() if u.kind == "matrix"
    }
    budget = costs["blocks.2.mlp.fc1"] + 96 + 3 + 50
    alloc = allocate(list(units.values()), scores, budget, costs, alpha=10.0, beta=5.0)
    assert "blocks.2.mlp.fc1" in alloc.structured
    assert "blocks.1.norm1.weight" in alloc.whole
    assert "blocks.1.norm2.bias" not in alloc.whole and "blocks.1.norm2.bias" not in alloc.sparse
    v_rows = alloc.sparse["blocks.4.attn.qkv[v]"]
    expected = torch.tensor([(r - 192) * 96 + c for r in range(200, 210) for c in range(5)])
    assert set(expected.tolist()) <= set(v_rows.tolist())
    assert alloc.realised == budget


@pytest.mark.parametrize("name", SPT)
def test_masked_entries_stay_bit_identical_under_adamw_weight_decay(tiny_backbone, name):
    model = tiny_backbone(NUM_CLASSES)
    pretrained = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = give_sensitivity(methods.get(name, budget=0.01), model, NUM_CLASSES)
    method.apply(model)
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, SPTLinear)}
    assert any(m.sparse_index.numel() for m in wrapped.values())
    opt = torch.optim.AdamW(method.param_groups(model, weight_decay=0.5), lr=1e-2)
    assert any(g["weight_decay"] > 0 for g in opt.param_groups)
    x, y = _batch()
    model.train()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    moved = 0
    for path, module in wrapped.items():
        before = pretrained[f"{path}.weight"]
        assert torch.equal(module.base.weight, before), f"{path}: frozen weights moved"
        after = module.effective_weight().detach().flatten()
        outside = torch.ones_like(after, dtype=torch.bool)
        outside[module.sparse_index] = False
        assert torch.equal(after[outside], before.flatten()[outside]), path
        moved += int((after[module.sparse_index] != before.flatten()[module.sparse_index]).sum())
    assert moved > 0, "the unstructured entries must train"
    trained = {id(p) for _, p in method.trainable_parameters(model)}
    for pname, param in model.named_parameters():  # vectors not chosen stay as they were
        key = pname.replace(".base.", ".")
        if id(param) not in trained and key in pretrained:
            assert torch.equal(param, pretrained[key]), pname


def test_sensitivity_is_deterministic_and_depends_on_the_seed(tiny_backbone):
    a, b = _scores(tiny_backbone(NUM_CLASSES)), _scores(tiny_backbone(NUM_CLASSES))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = _scores(tiny_backbone(NUM_CLASSES), seed=1)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert set(a) == {u.param for u in allocation_units(tiny_backbone(NUM_CLASSES))}
    assert all(float(s.sum()) > 0 for k, s in a.items() if k.endswith("weight"))
    # same scores, same allocation
    m1, m2 = methods.get("spt_lora"), methods.get("spt_lora")
    m1.set_sensitivity(a)
    m2.set_sensitivity(b)
    m1.apply(tiny_backbone(NUM_CLASSES))
    m2.apply(tiny_backbone(NUM_CLASSES))
    assert m1.allocation_rows() == m2.allocation_rows()


def test_obtain_scores_computes_once_then_reads_the_cache(tmp_path, tiny_backbone):
    calls = []

    def compute():
        calls.append(1)
        return _scores(tiny_backbone(NUM_CLASSES))

    first, source1 = obtain_scores("k1", tmp_path, compute, {"task": "t"})
    second, source2 = obtain_scores("k1", tmp_path, compute, {"task": "t"})
    assert (source1, source2, len(calls)) == ("computed", "cache", 1)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_obtain_scores_fetches_the_artifact_before_recomputing(tmp_path, tiny_backbone):
    """A trial on a node without the cache file downloads the study's artifact."""
    scores = _scores(tiny_backbone(NUM_CLASSES))
    artifact = save_scores(tmp_path / "artifacts" / "sensitivity" / "k2.safetensors", scores, {})

    def compute():
        raise AssertionError("must not recompute when the artifact is reachable")

    node_cache = tmp_path / "other-node"
    got, source = obtain_scores(
        "k2", node_cache, compute, {}, artifact_uri=artifact.as_uri(), fetch=fetch_artifact
    )
    assert source == "artifact" and cache_path(node_cache, "k2").exists()
    assert all(torch.equal(got[k], scores[k]) for k in scores)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spt-data")
    load_task("synth/count", root, 32)
    return root


def test_trainer_shares_one_sensitivity_pass_across_trials_and_stages(data_root):
    base = {
        "task": "synth/count",
        "method": "spt_lora",
        "epochs": 1,
        "data_root": str(data_root),
        "prepare_seed": 7,
    }
    tune_a = Trainer(TrialSpec(**base, hp={"budget": 0.01}, seed=7))
    tune_b = Trainer(TrialSpec(**base, hp={"budget": 0.03, "lr": 3e-3}, seed=7))
    final = Trainer(TrialSpec(**base, hp={"budget": 0.03}, stage="final", seed=1007))
    assert tune_a.prepared.source == "computed"
    assert tune_b.prepared.source == final.prepared.source == "cache"
    assert tune_a.prepared.key == tune_b.prepared.key == final.prepared.key
    metrics = next(tune_b.epochs())
    assert metrics["sensitivity_reused"] == 1.0
    other_seed = Trainer(TrialSpec(**{**base, "prepare_seed": 8}, hp={"budget": 0.01}))
    assert other_seed.prepared.key != tune_a.prepared.key


def test_allocation_report_table_and_plot(tiny_backbone):
    model = tiny_backbone(NUM_CLASSES)
    method = give_sensitivity(methods.get("spt_adapter", budget=0.05), model, NUM_CLASSES)
    method.apply(model)
    rows = method.allocation_rows()
    table = pq.read_table(io.BytesIO(allocation_bytes(rows))).to_pylist()
    assert table == rows
    totals = allocation_totals(rows)
    assert totals["spt/realised"] == method.allocation.realised
    assert totals["spt/structured_modules"] == len(method.allocation.structured) > 0
    png = allocation_png(rows, "spt_adapter")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
