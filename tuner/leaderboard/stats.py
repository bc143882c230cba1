"""Statistical ties on the leaderboard: a paired bootstrap over test examples.

The first seed study's headline is that carefully tuned PETL methods tie. A table that
bolds the best number without saying which others are indistinguishable from it misleads,
so for every task we resample test examples (the same resample for every method: the test
is *paired*) and call a method tied with the best when the bootstrap interval of
"best minus it" reaches zero. Seeds are averaged per example first, so seed noise counts.
"""

from __future__ import annotations

import numpy as np


def per_example_accuracy(correct_by_seed: list[np.ndarray]) -> np.ndarray:
    """Mean over seeds of 0/1 correctness, per test example (all seeds, same order)."""
    stacked = np.stack([np.asarray(c, dtype=np.float64) for c in correct_by_seed])
    return stacked.mean(axis=0)


def bootstrap_ties(
    accuracy: dict[str, np.ndarray],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float | bool]]:
    """For each method: its mean, whether it is the best, and whether it ties the best.

    ``accuracy`` maps method → per-example accuracy (see ``per_example_accuracy``); all
    arrays must be the same test set in the same order. Returns, per method, ``mean``,
    ``best``, ``tied`` (best included), and ``low``: the lower bound of the
    ``confidence`` interval of (best − method).
    """
    names = list(accuracy)
    sizes = {len(v) for v in accuracy.values()}
    if len(sizes) != 1:
        raise ValueError(f"methods were scored on different test sets: sizes {sorted(sizes)}")
    n = sizes.pop()
    matrix = np.stack([np.asarray(accuracy[m], dtype=np.float64) for m in names])
    means = matrix.mean(axis=1)
    best = int(np.argmax(means))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    # (resamples, methods): the mean of each method on each resample
    boot = matrix[:, idx].mean(axis=2).T
    diffs = boot[:, [best]] - boot
    low = np.quantile(diffs, (1 - confidence) / 2, axis=0)
    return {
        m: {
            "mean": float(means[i]),
            "best": i == best,
            "tied": bool(i == best or low[i] <= 0.0),
            "low": float(low[i]),
        }
        for i, m in enumerate(names)
    }
