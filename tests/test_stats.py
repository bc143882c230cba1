"""Paired bootstrap ties on planted predictions."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.leaderboard.stats import bootstrap_ties, per_example_accuracy


def _correct(rng, n, acc):
    return (rng.random(n) < acc).astype(float)


def test_clearly_worse_method_is_not_tied_and_near_equal_one_is():
    rng = np.random.default_rng(0)
    n = 1000
    base = _correct(rng, n, 0.80)
    near = base.copy()
    flip = rng.choice(n, 10, replace=False)  # differs on 1% of examples, both directions
    near[flip] = 1 - near[flip]
    worse = base * (rng.random(n) < 0.85)  # loses ~12 points, paired with base
    result = bootstrap_ties({"a": base, "near": near, "worse": worse}, seed=1)
    assert sum(r["best"] for r in result.values()) == 1
    assert result["a"]["tied"] and result["near"]["tied"]
    assert not result["worse"]["tied"] and result["worse"]["low"] > 0.05


def test_seeds_are_averaged_per_example_and_result_is_seeded():
    a = per_example_accuracy([np.array([1, 0, 1, 1]), np.array([1, 1, 0, 1])])
    np.testing.assert_allclose(a, [1.0, 0.5, 0.5, 1.0])
    rng = np.random.default_rng(3)
    acc = {m: _correct(rng, 300, p) for m, p in [("x", 0.7), ("y", 0.65)]}
    assert bootstrap_ties(acc, seed=5) == bootstrap_ties(acc, seed=5)


def test_different_test_sets_are_refused():
    with pytest.raises(ValueError, match="different test sets"):
        bootstrap_ties({"a": np.ones(5), "b": np.ones(6)})
