"""SPT-Adapter: adapters after the most sensitive matrices, sparse tuning elsewhere.

The allocation is :mod:`tuner.methods.spt.allocation`'s; here the structured module is a bottleneck
adapter (width r, zero-initialised up-projection) applied sequentially to the output of a
matrix (or of its q, k or v rows). Adapters are non-linear, so there is no merge.
"""

from __future__ import annotations

from tuner.methods.registry import register
from tuner.methods.spt.method import SPTMethod


@register
class SPTAdapter(SPTMethod):
    name = "spt_adapter"
    description = "SPT-Adapter: sensitivity-chosen adapters + sparse entries under a budget."
    paper = "He et al., Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning, ICCV 2023"
    structure = "adapter"
