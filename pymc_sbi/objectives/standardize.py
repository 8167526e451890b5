"""Z-scoring statistics that an estimator carries from its training data.

Networks train and evaluate on standardised inputs
``z = (v - mean) / std``, with ``mean``/``std`` computed once from the
training set and stored with the estimator, so that a trained estimator is
applied to raw ``theta`` and ``x``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["Standardization", "fit_standardization"]

_MIN_STD = 1e-8


class Standardization(NamedTuple):
    """Means and standard deviations of ``theta`` and (flattened) ``x``."""

    theta_mean: jnp.ndarray
    theta_std: jnp.ndarray
    x_mean: jnp.ndarray
    x_std: jnp.ndarray

    def theta(self, theta):
        """``(theta - mean) / std``."""
        return (theta - self.theta_mean) / self.theta_std

    def x(self, x):
        """``(x - mean) / std`` on flattened ``x`` of shape ``(..., x_dim)``."""
        return (x - self.x_mean) / self.x_std

    def x_inverse(self, z):
        """Back from standardised to raw ``x``."""
        return z * self.x_std + self.x_mean

    def theta_inverse(self, z):
        """Back from standardised to raw ``theta``."""
        return z * self.theta_std + self.theta_mean

    def theta_log_det(self):
        r"""``-\sum_i \log \sigma_{\theta,i}``: log-Jacobian of ``theta -> z``."""
        return -jnp.sum(jnp.log(self.theta_std))

    def x_log_det(self):
        r"""``-\sum_i \log \sigma_i``: log-Jacobian of ``x -> z``."""
        return -jnp.sum(jnp.log(self.x_std))


def _moments(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(v, dtype=np.float64)
    mean = v.mean(axis=0)
    std = v.std(axis=0)
    # constant columns: leave them unscaled rather than divide by ~0
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean, std


def fit_standardization(theta, x, dtype=jnp.float32) -> Standardization:
    """Compute :class:`Standardization` from ``theta`` ``(n, d)`` and ``x`` ``(n, x_dim)``.

    Constant columns (``std == 0``) get ``std = 1``.
    """
    tm, ts = _moments(theta)
    xm, xs = _moments(x)
    return Standardization(*(jnp.asarray(a, dtype=dtype) for a in (tm, ts, xm, xs)))
