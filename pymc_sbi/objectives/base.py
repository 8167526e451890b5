"""Shared pieces of the training objectives: the state and the objective tuple.

An objective is a :class:`Objective` -- a NamedTuple of pure functions, the
same layering as ``optax.GradientTransformation`` or ``blackjax``'s
``SamplingAlgorithm``::

    state = objective.init(rng_key, batch, optimizer)        # -> TrainState
    state, metrics = objective.step(rng_key, state, batch)   # one gradient step
    metrics = objective.evaluate(rng_key, state, batch)      # no update

``batch`` is a dict ``{"theta": (B, d), "x": (B, ...)}``. ``init`` receives
the *whole training set* as its batch: it computes the z-scoring statistics
from it. ``step`` and ``evaluate`` are pure and ``jit``-able; a custom training
loop built on them gives exactly what :func:`pymc_sbi.fit` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from pymc_sbi.objectives.standardize import Standardization, fit_standardization

__all__ = [
    "Objective",
    "TrainState",
    "apply_gradients",
    "cast_batch",
    "flatten_x",
    "init_params",
    "maximum_likelihood",
    "new_train_state",
]


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes
    ----------
    params
        Network parameters (a flax variables dict).
    opt_state
        Optimizer state.
    standardization
        Z-scoring statistics of the training set (not trained).
    step
        Number of gradient steps taken.
    module
        The network (static: part of the tree structure, not a leaf).
    tx
        The optimizer (static).
    """

    params: Any
    opt_state: Any
    standardization: Standardization
    step: jax.Array
    module: nn.Module = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)


class Objective(NamedTuple):
    """A training objective as pure functions (see the module docstring).

    Attributes
    ----------
    init
        ``(rng_key, batch, optimizer) -> TrainState``.
    step
        ``(rng_key, state, batch) -> (TrainState, metrics)``.
    evaluate
        ``(rng_key, state, batch) -> metrics``; ``metrics["loss"]`` is what
        early stopping monitors.
    kind
        ``"nle"``, ... -- how the trained network is used by an estimator.
    network
        The (unbound) flax network the objective trains.
    """

    init: Callable[..., TrainState]
    step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    evaluate: Callable[..., dict[str, jax.Array]]
    kind: str
    network: nn.Module


def flatten_x(x: jax.Array, x_ndim: int) -> jax.Array:
    """Flatten the trailing ``x_ndim`` event axes of ``x`` into one."""
    lead = x.shape[: x.ndim - x_ndim]
    return jnp.reshape(x, (*lead, -1))


def cast_batch(batch, dtype) -> tuple[jax.Array, jax.Array]:
    """``theta`` ``(B, d)`` and flattened ``x`` ``(B, x_dim)`` of a batch, cast to ``dtype``."""
    theta = jnp.asarray(batch["theta"], dtype)
    x = jnp.asarray(batch["x"], dtype)
    return theta, jnp.reshape(x, (x.shape[0], -1))


@partial(jax.jit, static_argnums=0)
def _init(module: nn.Module, rng_key, *example):
    return module.init(rng_key, *example)


def init_params(module: nn.Module, rng_key, *example):
    """``module.init(rng_key, *example)`` as one compiled program.

    Run eagerly, every layer's initialiser and every matmul of the example
    forward pass compiles as its own program (~2 s for a 3-layer MLP in a
    fresh process, most of it in ``truncated_normal``); compiled together it
    is ~1.3 s. Flax modules hash by value, so equal modules with equal
    example shapes reuse the program. Same key, same parameters as
    ``module.init``.
    """
    return _init(module, rng_key, *example)


def new_train_state(module, params, standardization, optimizer) -> TrainState:
    """A :class:`TrainState` at step 0 with a fresh optimizer state."""
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        standardization=standardization,
        step=jnp.zeros((), jnp.int32),
        module=module,
        tx=optimizer,
    )


def apply_gradients(state: TrainState, grads) -> TrainState:
    """One optimizer update of ``state.params`` with ``grads``; increments ``step``."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1)


def maximum_likelihood(kind: str, network: nn.Module, dtype, *, bind, log_prob) -> Objective:
    r"""``init``/``step``/``evaluate`` for a conditional density fitted by maximum likelihood.

    The loss is :math:`-\frac1B \sum_i \texttt{log\_prob}(\theta_i, x_i)`.

    Parameters
    ----------
    kind
        ``"nle"`` or ``"npe"``.
    network
        The unbound network.
    dtype
        Training dtype.
    bind
        ``(network, theta, x, standardization) -> (module, init_args)``: the network
        with its ``features`` set, and the example inputs ``module.init`` takes.
    log_prob
        ``(module, params, standardization, x, theta) -> (B,)`` log densities.
    """

    def init(rng_key, batch, optimizer: optax.GradientTransformation) -> TrainState:
        theta, x = cast_batch(batch, dtype)
        standardization = fit_standardization(theta, x, dtype)
        module, example = bind(network, theta, x, standardization)
        params = init_params(module, rng_key, *example)
        return new_train_state(module, params, standardization, optimizer)

    def loss_fn(params, state: TrainState, batch):
        theta, x = cast_batch(batch, dtype)
        return -jnp.mean(log_prob(state.module, params, state.standardization, x, theta))

    def step(rng_key, state: TrainState, batch):
        del rng_key  # maximum likelihood needs no randomness
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state, batch)
        return apply_gradients(state, grads), {"loss": loss}

    def evaluate(rng_key, state: TrainState, batch):
        del rng_key
        return {"loss": loss_fn(state.params, state, batch)}

    return Objective(init=init, step=step, evaluate=evaluate, kind=kind, network=network)
