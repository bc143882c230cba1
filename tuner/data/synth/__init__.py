"""The offline synthetic task suite (VTAB-1k's three groups, drawn procedurally): ``suite``
holds the registry and the writer, ``natural``/``structured`` the renderers, ``draw`` the
shared drawing helpers."""

from tuner.data.synth.suite import (
    SPLIT_SIZES,
    SYNTH_TASKS,
    SYNTH_VERSION,
    SynthTask,
    split_rng,
    write_synth_suite,
)

__all__ = [
    "SPLIT_SIZES",
    "SYNTH_TASKS",
    "SYNTH_VERSION",
    "SynthTask",
    "split_rng",
    "write_synth_suite",
]
