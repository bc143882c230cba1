"""SPT's ablations (random positions, structured-/unstructured-only, sensitivity batches) and
``analyze allocation`` on planted allocation tables with known shares."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import give_sensitivity
from typer.testing import CliRunner

from tuner import methods
from tuner.cli import app
from tuner.methods.base import PrepareContext, count_trainable
from tuner.methods.spt import sensitivity as sens
from tuner.methods.spt.allocation import allocate, allocation_units, eligible_params, unit_scores
from tuner.methods.spt.allocation_table import allocation_bytes
from tuner.methods.spt.method import SPTLinear
from tuner.tracking.client import TrackingService

K = 5
runner = CliRunner()


def _context(tmp_path, seed: int = 3, shared_uri=None, fetch=None) -> PrepareContext:
    return PrepareContext(
        task="synth/count", backbone="tiny", num_classes=K, seed=seed, cache_dir=tmp_path,
        device=torch.device("cpu"), to_input=lambda b: b.float() / 127.5 - 1,
        mean=torch.zeros(3), std=torch.ones(3), shared_uri=shared_uri, fetch=fetch,
    )  # fmt: skip


def _data(model, n: int = 64):
    g = torch.Generator().manual_seed(0)
    size = model.patch_embed.img_size
    x = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, K, (n,), generator=g)


def _positions(method) -> set[tuple[str, str, int]]:
    a = method.allocation
    out = {("s", n, 0) for n in a.structured} | {("w", n, 0) for n in a.whole}
    return out | {("u", n, int(i)) for n, idx in a.sparse.items() for i in idx}


def test_random_allocation_same_budget_other_positions_no_gradients(
    tiny_backbone, tmp_path, monkeypatch
):
    model = tiny_backbone(K)
    spt = give_sensitivity(methods.get("spt_lora", budget=0.03), model, K)
    spt.apply(model)
    tau = round(0.03 * eligible_params(tiny_backbone(K)))

    def no_gradients(*args, **kwargs):
        raise AssertionError("the random ablation must not run the sensitivity pass")

    monkeypatch.setattr(sens, "compute_sensitivity", no_gradients)
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        net = tiny_backbone(K)
        method = methods.get("spt_lora", budget=0.03, allocation="random")
        prepared = method.prepare(net, _data(net), _context(tmp_path, seed))
        method.apply(net)
        assert count_trainable(net, method)[1] - net.embed_dim == tau == method.allocation.realised
        runs[name] = (prepared, method)
    (pa, a), (pb, b), (pc, c) = runs["a"], runs["b"], runs["c"]
    assert (pa.kind, pa.source, pb.source) == ("random_scores", "computed", "cache")
    assert pa.key == pb.key != pc.key
    assert _positions(a) == _positions(b)  # reproducible from its seed
    assert _positions(a) != _positions(spt) and _positions(a) != _positions(c)
    assert a.allocation.structured and a.allocation.sparse  # the α/β rules still mix kinds


def test_structured_only_and_unstructured_only_allocate_only_their_kind(tiny_backbone):
    model = tiny_backbone(K)
    scores = give_sensitivity(methods.get("spt_lora"), model, K).scores
    units = allocation_units(model)
    cost = {u.name: 8 * (u.cols + u.rows[1] - u.rows[0]) for u in units if u.kind == "matrix"}
    budget = round(0.05 * eligible_params(model))
    structured = allocate(units, scores, budget, cost, 10.0, 5.0, mode="structured")
    assert structured.sparse == {} and structured.structured and structured.whole
    assert 0 <= budget - structured.realised < max(cost.values())  # within one module
    for name, c in structured.structured.items():  # every module earned by SPT's α rule
        assert structured.sensitive[name] * 10.0 >= c
    loose = allocate(units, scores, budget, cost, 10.0, 5.0, mode="unstructured")
    assert loose.structured == {} and loose.whole == {} and loose.realised == budget
    matrices = [u for u in units if u.kind == "matrix"]
    flat = torch.cat([unit_scores(u, scores) for u in matrices])
    top = set(torch.topk(flat, budget).indices.tolist())  # the top matrix entries, exactly
    sizes = torch.tensor([0] + [u.numel for u in matrices]).cumsum(0).tolist()
    offsets = {u.name: start for u, start in zip(matrices, sizes, strict=False)}
    chosen = {offsets[n] + i for n, idx in loose.sparse.items() for i in idx.tolist()}
    assert chosen == top
    # through the method: no sparse delta anywhere in structured-only
    method = methods.get("spt_adapter", budget=0.05, allocation_mode="structured")
    method.set_sensitivity(scores)
    method.apply(model)
    wrapped = [m for m in model.modules() if isinstance(m, SPTLinear)]
    assert wrapped and all(m.sparse_index.numel() == 0 for m in wrapped)
    with pytest.raises(ValueError, match="allocation_mode='half': Input should be 'both'"):
        methods.get("spt_lora", allocation_mode="half")


def test_sensitivity_batches_are_in_the_cache_key(tiny_backbone, tmp_path):
    model = tiny_backbone(K)
    data = _data(model)
    fetched = []
    keys = {}
    for batches in (1, 2):
        method = methods.get("spt_lora", sensitivity_batches=batches)
        # the study's artifact holds another key's scores: never fetched for this one
        ctx = _context(tmp_path, shared_uri="file:///x/sensitivity/other.safetensors",
                       fetch=lambda uri, dst: fetched.append(uri))  # fmt: skip
        prepared = method.prepare(model, data, ctx)
        keys[batches] = (prepared.key, method.scores)
    assert keys[1][0] != keys[2][0] and fetched == []
    one, two = keys[1][1], keys[2][1]
    assert any(not torch.equal(one[k], two[k]) for k in one)
    assert all(bool((two[k] >= one[k]).all()) for k in one)  # a sum over more batches


def _rows(cells: list[tuple[str, str, str, int]]) -> list[dict]:
    return [
        {"unit": u, "block": b, "allocation": a, "trainable": n, "sensitive_entries": n}
        for u, b, a, n in cells
    ]


PLANTED = {  # task → (variant params, allocation rows)
    ("synth/count", ""): _rows([("blocks.0.attn.qkv[q]", "0", "lora", 600),
                                ("blocks.1.mlp.fc1", "1", "unstructured", 300),
                                ("blocks.1.norm1.weight", "1", "whole", 100)]),
    ("synth/shape", ""): _rows([("blocks.2.mlp.fc2", "2", "lora", 900),
                                ("norm.weight", "final", "whole", 100)]),
    ("synth/count", "random"): _rows([("blocks.3.attn.proj", "3", "unstructured", 1000)]),
}  # fmt: skip


def _analyze(*args: str):
    return runner.invoke(app, ["analyze", *args])


def test_allocation_kind_shares_per_task_on_planted_tables(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = TrackingService(uri, "spt")
    for i, ((task, alloc), rows) in enumerate(PLANTED.items()):
        for seed in (0, 1) if i == 0 else (0,):  # two seeds of one, to test the mean
            key = f"final/{i}/{seed}"
            tags = {"stage": "final", "task": task, "method": "spt_lora", "seed": seed}
            tracker.start_run(key, key, tags, params={"allocation": alloc or "sensitivity"})
            tracker.log_artifact_bytes(key, "allocation.parquet", allocation_bytes(rows))
            tracker.end_run(key)
    tracker.start_run("lora", "lora", {"stage": "final", "task": "synth/count", "method": "lora"})
    tracker.end_run("lora")  # not SPT: no allocation record, left out
    TrackingService(uri, "plain")
    out = tmp_path / "a"
    common = ["--tracking-uri", uri, "--out", str(out)]
    result = _analyze("allocation", "--experiment", "spt", *common)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "allocation.parquet")
    sums = table.groupby(["task", "variant"])["share"].sum()
    assert sums.to_dict() == pytest.approx(
        {("synth/count", "spt_lora"): 1, ("synth/shape", "spt_lora"): 1,
         ("synth/count", "spt_lora (random)"): 1}
    )  # fmt: skip
    summary = pd.read_parquet(out / "allocation.tasks.parquet").set_index(["task", "variant"])
    count = summary.loc[("synth/count", "spt_lora")]
    assert (count["seeds"], count["budget"]) == (2, 1000)
    assert (count["q"], count["fc1"], count["vectors"]) == pytest.approx((0.6, 0.3, 0.1))
    assert (count["structured"], count["unstructured"], count["whole"]) == pytest.approx(
        (0.6, 0.3, 0.1)
    )
    assert count["depth_centre"] == pytest.approx(0.4 / 1.0)  # 0.6 at depth 0, 0.4 at 1
    shape = summary.loc[("synth/shape", "spt_lora")]
    assert (shape["fc2"], shape["vectors"], shape["depth_centre"]) == pytest.approx((0.9, 0.1, 2))
    # disjoint allocations of two tasks: each is half the L1 of 1 away from their mean
    assert count["tv_from_mean"] == pytest.approx(0.5) == shape["tv_from_mean"]
    assert summary.loc[("synth/count", "spt_lora (random)"), "tv_from_mean"] == 0
    compact = pd.read_parquet(out / "allocation.summary.parquet").set_index(["task", "variant"])
    assert compact.loc[("synth/count", "spt_lora"), "top_operation"] == "q (0.60)"
    assert compact.loc[("synth/shape", "spt_lora"), "top_depth"] == "2 (0.90)"
    for png in ("allocation_depth.png", "allocation_operations.png", "allocation_kinds.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    empty = _analyze("allocation", "--experiment", "plain", *common)
    assert empty.exit_code == 2
    assert "no final run with an SPT allocation record" in " ".join(empty.output.split())
