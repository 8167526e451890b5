r"""Neural likelihood estimation (NLE).

A conditional density estimator :math:`q_\phi(x \mid \theta)` is fitted to
simulated pairs :math:`(\theta_i, x_i)` by maximum likelihood,

.. math::

    \mathcal{L}(\phi) = -\frac{1}{B} \sum_{i=1}^{B} \log q_\phi(x_i \mid \theta_i),

which, in expectation over :math:`\theta \sim \tilde p(\theta)`, is minimised by the
true likelihood :math:`p(x \mid \theta)` for any proposal :math:`\tilde p` with enough
support (Papamakarios, Sterratt & Murray 2019, "Sequential neural likelihood").
The network sees z-scored inputs; the reported loss includes the Jacobian of
the z-scoring, so it is the negative log-likelihood of the raw data.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pymc_sbi.nn import maf
from pymc_sbi.objectives.base import (
    Objective,
    maximum_likelihood,
)
from pymc_sbi.objectives.covariates import with_covariates
from pymc_sbi.objectives.standardize import Standardization

__all__ = ["nle", "nle_log_prob", "nle_sample"]


def nle_log_prob(
    module: nn.Module,
    params,
    standardization: Standardization,
    x: jax.Array,
    theta: jax.Array,
) -> jax.Array:
    r"""``log q(x | theta)`` for flat ``x`` ``(..., x_dim)`` and ``theta`` ``(..., d)``.

    .. math:: \log q(x \mid \theta) = \log q_z(z_x \mid z_\theta) - \sum_j \log \sigma_{x,j}
    """
    zx = standardization.x(x)
    zt = standardization.theta(theta)
    return module.apply(params, zx, zt) + standardization.x_log_det()


def nle_sample(module: nn.Module, params, standardization: Standardization, rng_key, theta):
    """Draws ``x ~ q(x | theta)`` for ``theta`` ``(..., d)``: flat ``x`` ``(..., x_dim)``."""
    zx = module.apply(params, rng_key, standardization.theta(theta), method="sample")
    return standardization.x_inverse(zx)


def nle(network: nn.Module | None = None, *, dtype=jnp.float32) -> Objective:
    """The NLE objective: train ``network`` as a conditional density of ``x`` given ``theta``.

    Parameters
    ----------
    network
        A conditional density network from :mod:`pymc_sbi.nn` (default: ``nn.maf()``).
    dtype
        Dtype the network trains and evaluates in (default float32, also under
        ``jax_enable_x64``).

    Returns
    -------
    Objective
        ``init`` / ``step`` / ``evaluate`` with ``kind="nle"``.
    """
    if network is None:
        network = maf()

    def bind(net, theta, x, std):
        return net.clone(features=x.shape[-1]), (std.x(x[:1]), std.theta(theta[:1]))

    # per-trial covariates (batch["covariates"]) join theta as conditioning inputs
    return with_covariates(
        maximum_likelihood("nle", network, dtype, bind=bind, log_prob=nle_log_prob)
    )
