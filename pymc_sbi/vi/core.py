r"""VI primitives (``init`` / ``step`` / ``evaluate``) and the chunked optimisation loop.

The layering follows the rest of pymc_sbi (and numpyro's ``SVI``)::

    algo = vi_algorithm(loss_fn, optimizer)      # pure functions
    state = algo.init(params)
    state, metrics = algo.step(rng_key, state)    # one stochastic gradient step
    metrics = algo.evaluate(rng_key, state)       # the loss without an update

:func:`run` drives ``step`` in compiled ``lax.scan`` chunks of ``chunk_size``
steps (one compilation, one host round trip per chunk), with a progress bar, a
NaN guard and a convergence check between chunks:

after ``min_iters`` steps the run stops when, for ``patience`` chunks in a row,
the mean loss of a chunk has not dropped below the previous chunk's by more
than twice the Monte-Carlo standard error of the difference (plus ``atol``):
:math:`\bar L_{c-1} - \bar L_c < 2\sqrt{s_c^2 + s_{c-1}^2} + \mathrm{atol}`,
with :math:`s_c` the standard deviation of the chunk's losses over
:math:`\sqrt{\text{chunk size}}`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

__all__ = ["VIAlgorithm", "VIState", "make_vi_optimizer", "run", "vi_algorithm"]


class VIState(NamedTuple):
    """Variational parameters, optimizer state and the number of steps taken."""

    params: Any
    opt_state: Any
    step: jax.Array


class VIAlgorithm(NamedTuple):
    """Pure functions of a VI run (see the module docstring)."""

    init: Callable[[Any], VIState]
    step: Callable[[jax.Array, VIState], tuple[VIState, dict[str, jax.Array]]]
    evaluate: Callable[[jax.Array, VIState], dict[str, jax.Array]]


def make_vi_optimizer(
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    lr_decay: float = 1.0,
    clip_norm: float | None = 10.0,
) -> optax.GradientTransformation:
    r"""Adam with an exponentially decaying learning rate, after global-norm clipping.

    :math:`\eta_t = \eta_0 \gamma^t` (``lr_decay`` = :math:`\gamma`, 1 = constant),
    or ``optimizer`` (then only the clipping is added).
    """
    if not 0.0 < lr_decay <= 1.0:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}.")
    if optimizer is None:
        schedule = (
            optax.exponential_decay(learning_rate, transition_steps=1, decay_rate=lr_decay)
            if lr_decay < 1.0
            else learning_rate
        )
        optimizer = optax.adam(schedule)
    if clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)


def vi_algorithm(
    loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]],
    optimizer: optax.GradientTransformation,
) -> VIAlgorithm:
    """``init`` / ``step`` / ``evaluate`` for ``loss_fn(params, rng_key) -> (loss, metrics)``.

    ``step`` adds ``grad_norm`` (before clipping) to the metrics.
    """

    def init(params: Any) -> VIState:
        return VIState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(rng_key: jax.Array, state: VIState) -> tuple[VIState, dict[str, jax.Array]]:
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, rng_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return VIState(params, opt_state, state.step + 1), metrics

    def evaluate(rng_key: jax.Array, state: VIState) -> dict[str, jax.Array]:
        return loss_fn(state.params, rng_key)[1]

    return VIAlgorithm(init, step, evaluate)


def _chunk_runner(step):
    @jax.jit
    def run_chunk(rng_key, state, n_steps_mask):
        def body(state, inputs):
            key, active = inputs
            new_state, metrics = step(key, state)
            # steps past max_iters in the last chunk are computed but not applied
            state = jax.tree.map(lambda a, b: jnp.where(active, a, b), new_state, state)
            return state, metrics

        keys = jax.random.split(rng_key, n_steps_mask.shape[0])
        return jax.lax.scan(body, state, (keys, n_steps_mask))

    return run_chunk


def run(
    algorithm: VIAlgorithm,
    state: VIState,
    rng_key: jax.Array,
    *,
    max_iters: int = 2000,
    min_iters: int = 100,
    chunk_size: int = 100,
    check_convergence: bool = True,
    patience: int = 3,
    atol: float = 1e-3,
    progressbar: bool = True,
    desc: str = "VI",
) -> tuple[VIState, dict[str, Any]]:
    """Optimise from ``state`` for up to ``max_iters`` steps (see the module docstring).

    Returns the final state and a history dict: ``loss`` and ``elbo`` per step
    (``np.ndarray``), ``iters``, ``converged`` and ``stop_reason``
    (``"converged"``, ``"max_iters"`` or ``"non_finite_loss"``). A chunk with a
    non-finite loss is discarded with a warning and the previous parameters kept;
    a non-finite loss in the first chunk raises ``FloatingPointError``.
    """
    if max_iters < 1 or chunk_size < 1:
        raise ValueError(f"max_iters and chunk_size must be >= 1, got {max_iters}, {chunk_size}.")
    if min_iters < 0:
        raise ValueError(f"min_iters must be >= 0, got {min_iters}.")
    run_chunk = _chunk_runner(algorithm.step)
    chunk_size = min(chunk_size, max_iters)
    losses: list[np.ndarray] = []
    elbos: list[np.ndarray] = []
    done, quiet, stop_reason = 0, 0, "max_iters"
    previous: tuple[float, float] | None = None
    bar = tqdm(total=max_iters, desc=desc, disable=not progressbar)
    while done < max_iters:
        n = min(chunk_size, max_iters - done)
        rng_key, key = jax.random.split(rng_key)
        mask = jnp.arange(chunk_size) < n
        new_state, metrics = run_chunk(key, state, mask)
        loss = np.asarray(metrics["loss"])[:n]
        if not np.all(np.isfinite(loss)):
            if done == 0:
                raise FloatingPointError(
                    "The VI loss was non-finite in the first steps; check that the target's "
                    "log-density is finite around the initialisation, or lower learning_rate."
                )
            warnings.warn(
                f"Non-finite VI loss after {done} steps; stopped and kept the last finite "
                "parameters.",
                RuntimeWarning,
                stacklevel=2,
            )
            stop_reason = "non_finite_loss"
            break
        state = new_state
        losses.append(loss)
        elbos.append(np.asarray(metrics["elbo"])[:n])
        done += n
        bar.update(n)
        mean, se = float(loss.mean()), float(loss.std() / math.sqrt(n))
        bar.set_postfix(loss=f"{mean:.4g}")
        if check_convergence and previous is not None and done >= min_iters:
            drop = previous[0] - mean
            quiet = quiet + 1 if drop < 2.0 * math.hypot(se, previous[1]) + atol else 0
            if quiet >= patience:
                stop_reason = "converged"
                break
        previous = (mean, se)
    bar.close()
    history = {
        "loss": np.concatenate(losses),
        "elbo": np.concatenate(elbos),
        "iters": done,
        "converged": stop_reason == "converged",
        "stop_reason": stop_reason,
    }
    return state, history
