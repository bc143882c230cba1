"""The strategies ``petl-sweep replay`` compares, and ``default``: what a preset's sweep does.

``default`` reads the preset's search settings (``tuner/presets/*_tpe_asha.yaml``): its trials
per study (``tune.num_samples``), its prior (``search.prior``, ``prior_top``: the replayed
table's other tasks stand in for the prior's table) or else its warm start
(``search.warm_start``, ``warm_start_top``: the engine's rule, fed with the table's other
tasks) and ASHA (``tune.early_stopping``, ``grace_period``, ``reduction_factor``). In a replay
its TPE searches the table's values, not the preset's continuous ranges: only recorded
configurations have results.
"""

from __future__ import annotations

from tuner.replay.compare import Asha, Strategy

DEFAULT_PRESET = "petl_vision_vtab1k_tpe_asha"


def preset_strategy(preset: str = DEFAULT_PRESET, name: str = "default") -> tuple[Strategy, Asha]:
    """The preset's search as a strategy, and its ASHA settings."""
    from tuner.presets import preset_data

    data = preset_data(preset)
    tune, search = data.get("tune", {}), data.get("search", {})
    from tuner.search_settings import SearchSettings, TuneSettings

    tune_s = TuneSettings(**tune)
    search_s = SearchSettings(**search)
    warm = "prior" if search_s.prior else "best" if search_s.warm_start else ""
    top = search_s.prior_top if search_s.prior else search_s.warm_start_top
    strategy = Strategy(
        name,
        "grid" if search_s.sampler == "grid" else "tpe",
        warm=warm,
        warm_top=top if warm else 0,
        budget=tune_s.num_samples,
        asha=tune_s.early_stopping,
    )
    return strategy, Asha(tune_s.grace_period, tune_s.reduction_factor)


def standard(default: Strategy, curves: bool, warm_top: int = 3) -> list[Strategy]:
    """grid, random, tpe, warm (the engine's warm start, leave-one-task-out) and default;
    with curves, each also with ASHA (``+asha``). Budgets: the study's configurations, but
    ``default``'s is the preset's."""
    base = [
        Strategy("grid", "grid"),
        Strategy("random", "random"),
        Strategy("tpe", "tpe"),
        Strategy("warm", "tpe", warm="best", warm_top=warm_top),
    ]
    plain_default = Strategy(
        default.name, default.proposer, default.warm, default.warm_top, default.budget, asha=False
    )
    out = [*base, plain_default]
    if curves:
        out += [
            Strategy(f"{s.name}+asha", s.proposer, s.warm, s.warm_top, s.budget, True) for s in out
        ]
    return out
