r"""Mixed neural likelihood estimation (MNLE) for discrete + continuous data.

Data :math:`x = (y, k)`: continuous columns :math:`y` (e.g. a reaction time)
followed by one category column :math:`k \in \{0, \dots, K-1\}` (e.g. a
choice). The estimator is a :class:`~pymc_sbi.nn.MixedDensity`,

.. math::

    \log q(y, k \mid c) = \log \pi_k(c)
        + \log q_{\text{flow}}(u \mid c, k) - \sum_j \log \sigma_j
        - [\text{log\_transform}] \sum_j \log y_j,
    \qquad u = (\log y - m) / \sigma,

with context :math:`c = (\theta, s)` (parameters and, if the simulations have
them, per-trial covariates; see :mod:`pymc_sbi.objectives.covariates`). It is
fitted by maximum likelihood like NLE. The z-scoring of the continuous part
is that of :math:`\log y` (with ``log_transform``); the category column is
never scaled. Positive data with ``log_transform`` get :math:`-\infty` at
:math:`y \le 0`, as the true density does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.nn.mixed import MixedDensity, mixed_density
from pymc_sbi.objectives.base import (
    Objective,
    TrainState,
    apply_gradients,
    cast_batch,
    init_params,
    new_train_state,
)
from pymc_sbi.objectives.covariates import with_covariates
from pymc_sbi.objectives.standardize import Standardization

__all__ = ["continuous_transform", "mnle", "mnle_log_prob", "mnle_sample"]


def continuous_transform(module, y):
    r"""``(u, log|du/dy|, valid)`` of the continuous part ``y`` ``(..., m)``.

    With ``module.log_transform``, :math:`u = \log y` (valid where every
    :math:`y_j > 0`), otherwise the identity.
    """
    if not module.log_transform:
        return y, jnp.zeros(y.shape[:-1], y.dtype), jnp.ones(y.shape[:-1], bool)
    positive = y > 0
    safe = jnp.where(positive, y, jnp.ones_like(y))
    log_y = jnp.log(safe)
    return log_y, -jnp.sum(log_y, axis=-1), jnp.all(positive, axis=-1)


def mnle_log_prob(module: nn.Module, params, standardization: Standardization, x, context):
    r"""``log q(x | context)`` for flat ``x`` ``(..., m + 1)`` and ``context`` ``(..., d + c)``."""
    y, k = x[..., :-1], x[..., -1:]
    u, log_jac, valid = continuous_transform(module, y)
    z = (u - standardization.x_mean[:-1]) / standardization.x_std[:-1]
    zc = standardization.theta(context)
    lp = module.apply(params, jnp.concatenate([z, k], axis=-1), zc)
    lp = lp + standardization.x_log_det() + log_jac
    return jnp.where(valid, lp, -jnp.inf)


def mnle_sample(module: nn.Module, params, standardization: Standardization, rng_key, context):
    """One draw ``x = (y, k)`` per context row, in the raw data space."""
    draw = module.apply(params, rng_key, standardization.theta(context), method="sample")
    u = draw[..., :-1] * standardization.x_std[:-1] + standardization.x_mean[:-1]
    y = jnp.exp(u) if module.log_transform else u
    return jnp.concatenate([y, draw[..., -1:]], axis=-1)


def _standardization(module, theta, x, dtype) -> Standardization:
    y, k = np.asarray(x[:, :-1], np.float64), np.asarray(x[:, -1], np.float64)
    if np.any(k != np.round(k)) or np.any(k < 0):
        raise ValueError(
            "MNLE expects the last column of x to be a category in {0, 1, ..., K-1}; found "
            f"values such as {np.unique(k[(k != np.round(k)) | (k < 0)])[:3]}."
        )
    if module.log_transform:
        if np.any(y <= 0):
            raise ValueError(
                "MNLE with log_transform=True needs positive continuous columns (x[..., :-1] > 0);"
                " pass mixed_density(log_transform=False) for data that can be <= 0."
            )
        y = np.log(y)
    theta = np.asarray(theta, np.float64)
    ts = theta.std(0)
    ys = y.std(0)
    return Standardization(
        *(
            jnp.asarray(a, dtype)
            for a in (
                theta.mean(0),
                np.where(ts < 1e-8, 1.0, ts),
                np.append(y.mean(0), 0.0),
                np.append(np.where(ys < 1e-8, 1.0, ys), 1.0),
            )
        )
    )


def mnle(network: nn.Module | None = None, *, dtype=jnp.float32) -> Objective:
    """The MNLE objective: a mixed density of ``x = (continuous..., category)`` given ``theta``.

    Parameters
    ----------
    network
        A :class:`~pymc_sbi.nn.MixedDensity` (default ``nn.mixed_density()``: an
        MLP for the category, a 5-component MDN for the log of the continuous part).
        If its ``num_categories`` is 0 it is set to ``max(k) + 1`` of the training data.
    dtype
        Dtype the network trains and evaluates in.

    Returns
    -------
    Objective
        ``init`` / ``step`` / ``evaluate`` with ``kind="mnle"``; batches may carry
        per-trial ``"covariates"``.
    """
    network = mixed_density() if network is None else network
    if not isinstance(network, MixedDensity):
        raise TypeError(
            f"mnle needs a MixedDensity network (pymc_sbi.nn.mixed_density(...)), got "
            f"{type(network).__name__}."
        )

    def init(rng_key, batch, optimizer) -> TrainState:
        theta, x = cast_batch(batch, dtype)
        k_max = int(np.max(np.asarray(x[:, -1]))) + 1
        module = network.bind_shapes(x.shape[-1], network.num_categories or max(k_max, 2))
        std = _standardization(
            module, batch["theta"], np.asarray(batch["x"]).reshape(x.shape), dtype
        )
        params = init_params(module, rng_key, std.x(x[:1]) * 0, std.theta(theta[:1]))
        return new_train_state(module, params, std, optimizer)

    def loss_fn(params, state: TrainState, batch):
        theta, x = cast_batch(batch, dtype)
        return -jnp.mean(mnle_log_prob(state.module, params, state.standardization, x, theta))

    def step(rng_key, state: TrainState, batch):
        del rng_key
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state, batch)
        return apply_gradients(state, grads), {"loss": loss}

    def evaluate(rng_key, state: TrainState, batch):
        del rng_key
        return {"loss": loss_fn(state.params, state, batch)}

    return with_covariates(
        Objective(init=init, step=step, evaluate=evaluate, kind="mnle", network=network)
    )
