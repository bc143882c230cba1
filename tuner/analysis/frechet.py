"""The Fréchet distance between two feature distributions, each summarised as a Gaussian.

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁ Σ₂)^{1/2})

(the FID formula; study 001 measures the upstream/downstream data gap with it). The only hard
part is the trace of the matrix square root. Two ways, chosen by ``method``:

* ``"eigh"``: Tr((Σ₁Σ₂)^{1/2}) = Σᵢ √λᵢ(Σ₁^{1/2} Σ₂ Σ₁^{1/2}), where the middle matrix is
  symmetric positive semi-definite, so a symmetric eigen-decomposition (negative round-off
  eigenvalues clipped to 0) gives it exactly. Stable when a covariance is rank-deficient
  (fewer samples than feature dimensions, dead features), where ``sqrtm`` of the
  non-symmetric product can come back complex or not finite.
* ``"sqrtm"``: ``scipy.linalg.sqrtm(Σ₁Σ₂)`` as FID implementations do, with their fix for a
  singular product (a small multiple of the identity added to both covariances) and the
  imaginary round-off dropped. Needs scipy.

``"auto"`` (the default) uses ``sqrtm`` when scipy is installed and falls back to ``eigh``
when it is not or when ``sqrtm``'s answer is unusable (not finite, or a real imaginary part).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

Method = Literal["auto", "eigh", "sqrtm"]
#: Offset added to both covariances when ``sqrtm`` of their product is singular (FID's).
SQRTM_EPS = 1e-6
#: Largest imaginary part of ``sqrtm``'s diagonal still counted as round-off (relative).
IMAG_TOL = 1e-3


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` (n × d, n ≥ 2), in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need an (n >= 2) x d feature matrix, got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative round-off eigenvalues → 0)."""
    vals, vecs = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ₁Σ₂)^{1/2}) through the symmetric matrix Σ₁^{1/2} Σ₂ Σ₁^{1/2}."""
    root = _psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    vals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def trace_sqrt_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray) -> float | None:
    """Tr((Σ₁Σ₂)^{1/2}) with ``scipy.linalg.sqrtm``; None when scipy is missing or the
    result is unusable even after FID's identity offset."""
    try:
        from scipy import linalg
    except ImportError:
        return None
    eye = np.eye(len(sigma1))
    for eps in (0.0, SQRTM_EPS):
        # a singular product warns; the checks below decide whether the answer is usable
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            root = linalg.sqrtm((sigma1 + eps * eye) @ (sigma2 + eps * eye))
        diag = np.diagonal(root)
        if not np.all(np.isfinite(diag)):
            continue
        scale = max(float(np.abs(diag).max()), 1e-12)
        if np.iscomplexobj(root) and float(np.abs(diag.imag).max()) > IMAG_TOL * scale:
            continue
        return float(np.real(np.trace(root)))
    return None


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    method: Method = "auto",
) -> float:
    """The squared Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), clipped at 0."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    square = (len(mu1), len(mu1))
    if mu1.shape != mu2.shape or sigma1.shape != square or sigma2.shape != square:
        raise ValueError(
            f"shapes do not match: means {mu1.shape} and {mu2.shape}, "
            f"covariances {sigma1.shape} and {sigma2.shape}"
        )
    cross = None
    if method in ("auto", "sqrtm"):
        cross = trace_sqrt_sqrtm(sigma1, sigma2)
        if cross is None and method == "sqrtm":
            raise ValueError("scipy.linalg.sqrtm is unavailable or gave no usable square root")
    if cross is None:
        cross = trace_sqrt_eigh(sigma1, sigma2)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross)
    return max(value, 0.0)


def frechet_between(a: np.ndarray, b: np.ndarray, method: Method = "auto") -> float:
    """Fréchet distance between two feature samples (rows are examples)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b), method=method)


def bootstrap_frechet(
    a: np.ndarray, b: np.ndarray, rounds: int, seed: int = 0, method: Method = "auto"
) -> np.ndarray:
    """The distance on ``rounds`` bootstrap resamples of both sets (each drawn with
    replacement at its own size): the spread is the error bar of the point estimate."""
    rng = np.random.default_rng(seed)
    out = np.empty(rounds)
    for i in range(rounds):
        ia, ib = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        out[i] = frechet_between(a[ia], b[ib], method)
    return out
