r"""MAP of an NPE posterior estimate inside the prior support.

:func:`map_estimate` maximises :math:`\log q(\theta \mid x_o)` over the
prior support by Adam in an unconstrained parametrisation of the support box
(logit / log / identity per dimension), started from the best of many
posterior draws (the ``num_to_optimize`` best of ``num_init``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pymc_sbi.direct.sampling import (
    check_npe,
    in_box,
    observation_batch,
    sample_posterior,
)
from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import flatten_x
from pymc_sbi.objectives.npe import npe_log_prob

__all__ = ["map_estimate"]


def _box_bijection(lower: tuple[float, ...], upper: tuple[float, ...], dtype):
    r"""Maps between :math:`\mathbb{R}^d` and the support box (logit / log / identity).

    Each branch sees only inputs where it applies (double ``where``), so no
    ``inf * 0`` reaches the gradients.
    """
    lo, hi = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    both = np.isfinite(lo) & np.isfinite(hi)
    lo_only = np.isfinite(lo) & ~np.isfinite(hi)
    hi_only = ~np.isfinite(lo) & np.isfinite(hi)
    lo_s = jnp.asarray(np.where(np.isfinite(lo), lo, 0.0), dtype)
    hi_s = jnp.asarray(np.where(np.isfinite(hi), hi, 0.0), dtype)
    width = jnp.asarray(np.where(both, hi - lo, 1.0), dtype)
    eps = 10 * float(jnp.finfo(dtype).eps)
    tiny = float(jnp.finfo(dtype).tiny)

    def to_box(u):
        u_b = jnp.where(both, u, 0.0)
        u_l = jnp.where(lo_only, u, 0.0)
        u_h = jnp.where(hi_only, u, 0.0)
        return jnp.where(
            both,
            lo_s + width * jax.nn.sigmoid(u_b),
            jnp.where(lo_only, lo_s + jnp.exp(u_l), jnp.where(hi_only, hi_s - jnp.exp(u_h), u)),
        )

    def from_box(theta):
        frac = jnp.clip((theta - lo_s) / width, eps, 1.0 - eps)
        return jnp.where(
            both,
            jnp.log(frac) - jnp.log1p(-frac),
            jnp.where(
                lo_only,
                jnp.log(jnp.maximum(theta - lo_s, tiny)),
                jnp.where(hi_only, jnp.log(jnp.maximum(hi_s - theta, tiny)), theta),
            ),
        )

    return to_box, from_box


def _npe_log_q(module, params, std, x, members):
    """``theta -> log q(theta | x)``; for an ensemble the log-mean-exp over members."""
    if members is None:
        return lambda theta: npe_log_prob(module, params, std, x, theta)

    def log_q(theta):
        lq = jax.vmap(lambda p: npe_log_prob(module, p, std, x, theta))(params)
        return jax.nn.logsumexp(lq, axis=0) - jnp.log(members).astype(lq.dtype)

    return log_q


@partial(
    jax.jit,
    static_argnames=("module", "bounds", "num_to_optimize", "steps", "learning_rate", "members"),
)
def _map_search(
    module, params, std, x, init, *, bounds, num_to_optimize, steps, learning_rate, members=None
):
    """Best of ``num_to_optimize`` Adam runs from the best rows of ``init`` ``(N, B, d)``.

    ``x`` is the flat ``(B, x_dim)`` batch; returns ``(B, d)``. Compiled once per
    network, shapes and settings, so repeated calls are fast.
    """
    lower, upper = bounds
    log_q = _npe_log_q(module, params, std, x, members)
    top = jnp.argsort(-log_q(init), axis=0)[:num_to_optimize]  # (k, B)
    start = jnp.take_along_axis(init, top[..., None], axis=0)  # (k, B, d)
    to_box, from_box = _box_bijection(lower, upper, init.dtype)
    # cosine decay to 1% of the step size: large moves first, a precise optimum last
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
    loss = lambda u: -jnp.sum(log_q(to_box(u)))

    def body(carry, _):
        u, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(u), opt_state, u)
        return (optax.apply_updates(u, updates), opt_state), None

    u0 = from_box(start)
    (u, _), _ = jax.lax.scan(body, (u0, tx.init(u0)), None, length=steps)
    cand = jnp.concatenate([to_box(u), start[:1]], axis=0)  # the best draw stays a candidate
    lp = log_q(cand)
    lp = jnp.where(in_box(lower, upper, cand) & jnp.isfinite(lp), lp, -jnp.inf)
    return jnp.take_along_axis(cand, jnp.argmax(lp, axis=0)[None, :, None], axis=0)[0]


def map_estimate(
    estimator: Estimator,
    x_obs,
    *,
    num_init: int = 1000,
    num_to_optimize: int = 10,
    steps: int = 500,
    learning_rate: float = 1e-2,
    seed=0,
) -> np.ndarray:
    r"""Mode of the posterior estimate within the prior support.

    .. math:: \hat\theta = \arg\max_{\theta \in S} \log q(\theta \mid x_o)

    (the normaliser :math:`Z(x_o)` does not move the mode).  Draws
    ``num_init`` samples with :func:`sample_posterior`, starts Adam from the
    ``num_to_optimize`` with the highest :math:`\log q`, and ascends
    :math:`\log q(T(u) \mid x_o)` in unconstrained coordinates
    :math:`\theta = T(u)` (logistic for a bounded interval, exponential for a
    half line), so every iterate stays in :math:`S`; stationary points in
    :math:`u` are stationary points of :math:`\log q` in :math:`\theta`.

    Parameters
    ----------
    estimator
        A trained NPE estimator.
    x_obs
        One observation ``x_shape`` or a batch ``(B, *x_shape)``.
    num_init
        Posterior draws to start from.
    num_to_optimize
        How many of the best draws are refined (in parallel).
    steps, learning_rate
        Adam iterations and initial step size (in the unconstrained
        coordinates), decayed along a cosine schedule to 1% of it.
    seed
        Integer seed or JAX PRNG key.

    Returns
    -------
    np.ndarray
        ``(d,)``, or ``(B, d)`` for a batch: the best point found (never worse
        than the best initial draw).
    """
    check_npe(estimator)
    xb, batched = observation_batch(estimator, x_obs)
    draws, _ = sample_posterior(estimator, xb, int(num_init), seed)  # (B, num_init, d)
    dt = estimator.dtype
    best = _map_search(
        estimator.module,
        estimator.params,
        estimator.standardization,
        flatten_x(xb, len(estimator.x_shape)).astype(dt),
        jnp.swapaxes(jnp.asarray(draws, dt), 0, 1),
        bounds=(tuple(estimator.spec.lower), tuple(estimator.spec.upper)),
        num_to_optimize=max(1, min(int(num_to_optimize), int(num_init))),
        steps=int(steps),
        learning_rate=float(learning_rate),
        members=estimator.members,
    )
    best = np.asarray(best)
    return best if batched else best[0]
