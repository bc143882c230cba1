"""SPT's allocation as a table and a per-layer picture, for MLflow and the closing notes.

Where a method put its parameters is SPT's whole claim, so a final run logs it: one row
per unit (q/k/v/proj/fc1/fc2 matrix or vector) that received anything, with its kind
(structured module, unstructured entries, whole vector) and count; and a figure with the
per-block stacked counts beside a map of which matrices got a structured module.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("lora", "adapter", "unstructured", "whole")
MATRICES = ("q", "k", "v", "proj", "fc1", "fc2")


def unit_label(unit: str) -> str:
    """``blocks.3.attn.qkv[q]`` → ``q``; ``blocks.3.mlp.fc1`` → ``fc1``; vectors keep a tail."""
    if unit.endswith("]"):
        return unit[unit.index("[") + 1 : -1]
    return unit.split(".", 2)[-1] if unit.startswith("blocks.") else unit


def allocation_bytes(rows: list[dict[str, Any]]) -> bytes:
    """The allocation table as parquet (unit, block, allocation, trainable, sensitive)."""
    table = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("unit", pa.string()),
                ("block", pa.string()),
                ("allocation", pa.string()),
                ("trainable", pa.int64()),
                ("sensitive_entries", pa.int64()),
            ]
        ),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def allocation_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Totals per kind, and how many structured modules: the headline numbers."""
    totals = {f"spt/{k}_params": 0 for k in KINDS}
    for row in rows:
        totals[f"spt/{row['allocation']}_params"] += int(row["trainable"])
    totals["spt/structured_modules"] = sum(r["allocation"] in ("lora", "adapter") for r in rows)
    totals["spt/realised"] = sum(int(r["trainable"]) for r in rows)
    return totals


def allocation_png(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """Per-block stacked trainable counts by kind, and the structured-module map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = sorted({r["block"] for r in rows if r["block"] != "final"}, key=int)
    fig, (bars, grid) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[3, 2])
    bottom = np.zeros(len(blocks))
    for kind, colour in zip(KINDS, ("#1f77b4", "#9467bd", "#ff7f0e", "#2ca02c"), strict=True):
        heights = np.array(
            [
                sum(r["trainable"] for r in rows if r["block"] == b and r["allocation"] == kind)
                for b in blocks
            ],
            dtype=float,
        )
        if heights.any():
            bars.bar(blocks, heights, bottom=bottom, label=kind, color=colour)
            bottom += heights
    bars.set_xlabel("block")
    bars.set_ylabel("trainable parameters")
    bars.legend(fontsize=8)
    bars.set_title(title or "SPT allocation per block", fontsize=10)
    # 2 = structured module, 1 = unstructured entries, 0 = frozen
    cells = np.zeros((len(MATRICES), len(blocks)))
    for r in rows:
        label = unit_label(r["unit"]).split(".")[-1]
        if r["block"] in blocks and label in MATRICES:
            value = 1 if r["allocation"] == "unstructured" else 2
            cells[MATRICES.index(label), blocks.index(r["block"])] = value
    grid.imshow(cells, cmap="Blues", vmin=0, vmax=2, aspect="auto")
    grid.set_yticks(range(len(MATRICES)), MATRICES)
    grid.set_xticks(range(len(blocks)), blocks)
    grid.set_xlabel("block")
    grid.set_title("dark: structured, light: unstructured", fontsize=9)
    fig.tight_layout()
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=110)
    plt.close(fig)
    return sink.getvalue()
