r"""Warn when data or parameters leave the range an estimator was trained on.

A neural surrogate is only trustworthy where it saw simulations. Each
dimension :math:`j` of the training context :math:`(\theta, s)` and of the
data :math:`x` has a training interval :math:`[a_j, b_j]` (the min and max of
the training set, recorded by :func:`pymc_sbi.objectives.with_covariates`);
a value is *out of range* when it lies outside

.. math:: [a_j - m (b_j - a_j),\; b_j + m (b_j - a_j)]

for a relative margin :math:`m` (default 5%). Estimators without a recorded
range (older files, NPE/NRE) fall back to the z-scoring statistics,
:math:`\mu_j \pm 4\sigma_j`, clipped to the prior support for :math:`\theta`.

:func:`check_range` checks arrays; :func:`check_posterior_range` checks every
neural term of a model on posterior draws (the per-trial ``theta`` each term
actually received, e.g. ``mu[subject_idx]``). Both warn once with an
:class:`OutOfRangeWarning` naming each offending variable, and return the
messages.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["OutOfRangeWarning", "check_range", "training_bounds"]


class OutOfRangeWarning(UserWarning):
    """Data or parameters outside the estimator's training range."""


def constant_value(v):
    """NumPy value of a constant/shared input (array, ``pm.Data``), ``None`` for other graphs."""
    if v is None:
        return None
    if hasattr(v, "get_value"):
        return np.asarray(v.get_value())
    if hasattr(v, "data") and hasattr(v, "type"):  # pytensor TensorConstant
        return np.asarray(v.data)
    if hasattr(v, "type"):
        return None
    return np.asarray(v, dtype=float)


def training_bounds(estimator, margin: float = 0.05):
    """``(context_lo, context_hi, x_lo, x_hi)``: allowed intervals per dimension.

    The context is ``(theta, covariates)``; ``x`` is flattened.
    """
    rng = estimator.data_range
    d = estimator.spec.dim
    if rng is not None:
        c_lo, c_hi = np.asarray(rng.context_min, float), np.asarray(rng.context_max, float)
        x_lo, x_hi = np.asarray(rng.x_min, float), np.asarray(rng.x_max, float)
    else:
        std = estimator.standardization
        cm, cs = np.asarray(std.theta_mean, float), np.asarray(std.theta_std, float)
        xm, xs = np.asarray(std.x_mean, float), np.asarray(std.x_std, float)
        c_lo, c_hi, x_lo, x_hi = cm - 4 * cs, cm + 4 * cs, xm - 4 * xs, xm + 4 * xs
        c_lo[:d] = np.maximum(c_lo[:d], estimator.spec.lower)
        c_hi[:d] = np.minimum(c_hi[:d], estimator.spec.upper)
    cw, xw = margin * (c_hi - c_lo), margin * (x_hi - x_lo)
    return c_lo - cw, c_hi + cw, x_lo - xw, x_hi + xw


def _messages(values, lo, hi, labels, what: str) -> list[str]:
    out = []
    values = np.reshape(np.asarray(values, float), (-1, len(labels)))
    if values.shape[0] == 0:
        return out
    vmin, vmax = np.nanmin(values, 0), np.nanmax(values, 0)
    for j, label in enumerate(labels):
        below = np.mean(values[:, j] < lo[j])
        above = np.mean(values[:, j] > hi[j])
        if below or above:
            out.append(
                f"{what} {label!r} spans [{vmin[j]:.4g}, {vmax[j]:.4g}] but the training range "
                f"(with margin) is [{lo[j]:.4g}, {hi[j]:.4g}]; {100 * (below + above):.1f}% "
                "of values are outside"
            )
    return out


def check_range(
    estimator,
    *,
    x=None,
    theta=None,
    covariates=None,
    margin: float = 0.05,
    where: str = "",
    warn: bool = True,
) -> list[str]:
    """Compare inputs of a term with the training range of ``estimator``.

    ``x`` ``(..., *x_shape)``, ``theta`` ``(..., d)`` and ``covariates`` ``(..., c)``
    are each checked against the per-dimension range seen in training.

    Returns
    -------
    list of str
        One message per out-of-range dimension (empty if all are inside). With
        ``warn=True`` they are also issued as one :class:`OutOfRangeWarning`.
    """
    c_lo, c_hi, x_lo, x_hi = training_bounds(estimator, margin)
    d = estimator.spec.dim
    msgs: list[str] = []
    if theta is not None:
        msgs += _messages(theta, c_lo[:d], c_hi[:d], estimator.spec.labels, "parameter")
    if covariates is not None and estimator.n_covariates:
        labels = [f"covariate[{i}]" for i in range(estimator.n_covariates)]
        msgs += _messages(covariates, c_lo[d:], c_hi[d:], labels, "covariate")
    if x is not None:
        labels = [f"x[{j}]" for j in range(estimator.x_dim)]
        msgs += _messages(x, x_lo, x_hi, labels, "observed data")
    if msgs and warn:
        prefix = f"{where}: " if where else ""
        warnings.warn(
            prefix
            + "outside the estimator's training range -- the surrogate is extrapolating:\n  "
            + "\n  ".join(msgs),
            OutOfRangeWarning,
            stacklevel=3,
        )
    return msgs
