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
import optax

from pymc_sbi.objectives.base import (
    Objective,
    TrainState,
    apply_gradients,
    cast_batch,
    new_train_state,
)
from pymc_sbi.standardize import Standardization, fit_standardization

__all__ = ["nle", "nle_log_prob"]


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
        from pymc_sbi.nn import maf

        network = maf()

    def init(rng_key, batch, optimizer: optax.GradientTransformation) -> TrainState:
        theta, x = cast_batch(batch, dtype)
        standardization = fit_standardization(theta, x, dtype)
        module = network.clone(features=x.shape[-1])
        params = module.init(rng_key, standardization.x(x[:1]), standardization.theta(theta[:1]))
        return new_train_state(module, params, standardization, optimizer)

    def loss_fn(params, state: TrainState, batch):
        theta, x = cast_batch(batch, dtype)
        lp = nle_log_prob(state.module, params, state.standardization, x, theta)
        return -jnp.mean(lp)

    def step(rng_key, state: TrainState, batch):
        del rng_key  # maximum likelihood needs no randomness
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state, batch)
        new = apply_gradients(state, grads)
        return new, {"loss": loss}

    def evaluate(rng_key, state: TrainState, batch):
        del rng_key
        return {"loss": loss_fn(state.params, state, batch)}

    return Objective(init=init, step=step, evaluate=evaluate, kind="nle", network=network)
