"""Representation similarity: CCA / SVCCA and linear CKA (biased and unbiased).

Conventions: a representation is a matrix ``[neurons, datapoints]`` (float64
internally). For a conv layer ``[N, C, H, W]``, :func:`as_neurons_by_datapoints`
treats channels as neurons and every (image, position) as a datapoint, as in
Raghu et al. (2020), Appendix B.2.

- :func:`cca_similarity`: mean canonical correlation (Raghu et al. 2017,
  SVCCA; Morcos et al. 2018). Each representation is centred; an orthonormal
  basis of its datapoint-space span is taken from an SVD, dropping directions
  with singular value below ``rtol * largest`` (this handles more neurons than
  datapoints and constant or duplicated neurons: they carry no direction).
  The canonical correlations are the singular values of ``Qx^T Qy``; the mean
  is over the ``min(rank_x, rank_y)`` of them. With ``keep_variance`` (e.g.
  0.99) each representation is first reduced to its top singular directions
  explaining that fraction of variance (the SVCCA step).
- :func:`linear_cka`: Kornblith et al. (2019), Eq. 5 with linear kernels:
  ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred features, or with
  ``unbiased=True`` the debiased HSIC estimator (Song et al. 2012), which
  needs at least 4 datapoints.

A representation that is constant over all datapoints has no direction to
compare, and both measures raise ``ValueError`` for it rather than return NaN.
"""

from __future__ import annotations

import numpy as np
import torch


def as_neurons_by_datapoints(activations: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[N, C, H, W]`` -> ``[C, N*H*W]``; ``[N, D]`` -> ``[D, N]`` (float64)."""
    array = (
        activations.detach().cpu().double().numpy()
        if isinstance(activations, torch.Tensor)
        else np.asarray(activations, dtype=np.float64)
    )
    if array.ndim == 4:
        return array.transpose(1, 0, 2, 3).reshape(array.shape[1], -1)
    if array.ndim == 2:
        return array.T
    raise ValueError(f"expected activations [N, C, H, W] or [N, D], got shape {array.shape}")


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"representations must be 2-D [neurons, datapoints], got {x.shape} and {y.shape}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"representations must share datapoints: {x.shape[1]} vs {y.shape[1]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("representations contain NaN or inf")
    centred = []
    for label, raw in (("x", x), ("y", y)):
        c = raw - raw.mean(axis=1, keepdims=True)
        # Relative test: centring a large constant leaves only rounding noise.
        if c.size == 0 or np.abs(c).max() <= 1e-12 * max(np.abs(raw).max(), np.finfo(np.float64).tiny):
            raise ValueError(f"representation {label} is constant over all datapoints; similarity is undefined")
        centred.append(c)
    return centred[0], centred[1]


def _span_basis(centred: np.ndarray, rtol: float, keep_variance: float | None) -> np.ndarray:
    """Orthonormal basis ``[datapoints, rank]`` of the centred neurons' span."""
    u, s, _ = np.linalg.svd(centred.T, full_matrices=False)  # centred.T: [datapoints, neurons]
    rank = int(np.sum(s > rtol * s[0]))
    if keep_variance is not None:
        variance = np.cumsum(s[:rank] ** 2) / np.sum(s[:rank] ** 2)
        rank = min(rank, int(np.searchsorted(variance, keep_variance - 1e-12) + 1))
    return u[:, :rank]


def canonical_correlations(x, y, rtol: float = 1e-10, keep_variance: float | None = None) -> np.ndarray:
    """All canonical correlations of ``x [n1, d]`` and ``y [n2, d]``, descending."""
    xc, yc = _check_pair(x, y)
    qx = _span_basis(xc, rtol, keep_variance)
    qy = _span_basis(yc, rtol, keep_variance)
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def cca_similarity(x, y, rtol: float = 1e-10, keep_variance: float | None = None) -> float:
    """Mean canonical correlation in [0, 1]; ``keep_variance`` enables the SVCCA reduction."""
    return float(np.mean(canonical_correlations(x, y, rtol, keep_variance)))


def _unbiased_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased HSIC (Song et al. 2012) of linear kernels K = x^T x, L = y^T y, in O(n * neurons).

    With K~, L~ the Gram matrices with zeroed diagonals:
    [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
    computed from the features so the n x n Gram matrices are never formed.
    """
    n = x.shape[1]
    diag_k, diag_l = np.sum(x * x, axis=0), np.sum(y * y, axis=0)  # [n]
    trace_kl = np.linalg.norm(x @ y.T) ** 2 - diag_k @ diag_l
    row_k = x.T @ x.sum(axis=1) - diag_k  # K~ 1, [n]
    row_l = y.T @ y.sum(axis=1) - diag_l
    value = trace_kl + row_k.sum() * row_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * row_k @ row_l
    return float(value / (n * (n - 3)))


def linear_cka(x, y, unbiased: bool = False) -> float:
    """Linear CKA of ``x [n1, d]`` and ``y [n2, d]`` (neurons x datapoints)."""
    xc, yc = _check_pair(x, y)
    if not unbiased:
        cross = np.linalg.norm(yc @ xc.T) ** 2  # ||Y^T X||_F^2 with datapoints as rows
        return float(cross / (np.linalg.norm(xc @ xc.T) * np.linalg.norm(yc @ yc.T)))
    n = xc.shape[1]
    if n < 4:
        raise ValueError(f"unbiased CKA needs at least 4 datapoints, got {n}")
    hsic_kl, hsic_kk, hsic_ll = _unbiased_hsic(xc, yc), _unbiased_hsic(xc, xc), _unbiased_hsic(yc, yc)
    if hsic_kk <= 0 or hsic_ll <= 0:
        raise ValueError(
            "unbiased CKA is undefined here: a self-similarity estimate is not positive (too few datapoints)"
        )
    return float(hsic_kl / np.sqrt(hsic_kk * hsic_ll))


MEASURES = {
    "cca": lambda x, y: cca_similarity(x, y),
    "svcca": lambda x, y: cca_similarity(x, y, keep_variance=0.99),
    "cka": lambda x, y: linear_cka(x, y),
    "cka-unbiased": lambda x, y: linear_cka(x, y, unbiased=True),
}
