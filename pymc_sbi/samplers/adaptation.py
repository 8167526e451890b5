r"""Cross-chain warm-up: a windowed preconditioner and one tuned scalar per kernel.

All chains share their tuning. With :math:`C` chains and a slow window of
:math:`W` steps the (co)variance of the target is estimated from :math:`C W`
draws (Welford's algorithm, batched with Chan et al.'s pairwise update), so
many chains give a good preconditioner after a few steps, and a single chain
falls back to Stan's windowed estimate. The windows follow Stan: a fast
initial buffer (step size only), doubling slow windows (preconditioner and
step size), a fast final buffer. At the end of every slow window the
regularised estimate (Stan's shrinkage towards :math:`10^{-3} I`)

.. math::

    \hat\Sigma = \frac{n}{n + 5}\,S + 10^{-3}\,\frac{5}{n + 5}\, I

becomes the new map :math:`L` (``diag``: :math:`\sqrt{\operatorname{diag}\hat\Sigma}`;
``dense``: its Cholesky factor), and the step size restarts its dual
averaging from its current value.

The tuned scalar of the slice sampler is the initial bracket width :math:`w`,
updated after each step as :math:`w \leftarrow 2 w \, N_e / (N_e + N_c)` with
:math:`N_e` the bracket expansions and :math:`N_c` the contractions over all
chains (Karamanis & Beutler 2021, zeus): at equilibrium a bracket is expanded
as often as it is shrunk.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Welford",
    "covariance",
    "precondition_from_covariance",
    "slice_width_update",
    "to_u",
    "to_z",
    "warmup_schedule",
    "welford_init",
    "welford_update",
]


def warmup_schedule(num_steps: int, with_windows: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-step flags ``(is_slow, is_window_end)`` of a Stan-style warm-up.

    Buffers are 75 / 25 (first slow window, then doubling) / 50 steps for
    ``num_steps >= 200``; shorter warm-ups use 15% / 75% / 10%. The last slow
    window absorbs the remainder. ``with_windows=False`` gives all-fast steps
    (nothing but the scalar is tuned).
    """
    slow = np.zeros(num_steps, bool)
    end = np.zeros(num_steps, bool)
    if not with_windows or num_steps < 20:
        return slow, end
    if num_steps >= 200:
        init_buffer, first_window, final_buffer = 75, 25, 50
    else:
        init_buffer = int(0.15 * num_steps)
        final_buffer = int(0.1 * num_steps)
        first_window = num_steps - init_buffer - final_buffer
    last = num_steps - final_buffer
    start, size = init_buffer, first_window
    while start < last:
        stop = start + size
        if stop + 2 * size > last:  # the next window would not fit: absorb the rest
            stop = last
        slow[start:stop] = True
        end[stop - 1] = True
        start, size = stop, 2 * size
    return slow, end


class Welford(NamedTuple):
    """Running count, mean and sum of squared deviations (``(d,)`` or ``(d, d)``)."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def welford_init(dim: int, dense: bool, dtype=None) -> Welford:
    """Empty running moments of ``dim``-vectors (a full covariance when ``dense``)."""
    dtype = dtype or jnp.result_type(float)
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return Welford(jnp.zeros((), dtype), jnp.zeros(dim, dtype), m2)


def welford_update(acc: Welford, z: jax.Array) -> Welford:
    """Add a batch ``z`` of shape ``(chains, d)`` (Chan, Golub & LeVeque's pairwise rule)."""
    n_b = z.shape[0]
    mean_b = jnp.mean(z, axis=0)
    dev = z - mean_b
    dense = acc.m2.ndim == 2
    m2_b = dev.T @ dev if dense else jnp.sum(dev**2, axis=0)
    n = acc.count + n_b
    delta = mean_b - acc.mean
    mean = acc.mean + delta * n_b / n
    cross = jnp.outer(delta, delta) if dense else delta**2
    m2 = acc.m2 + m2_b + cross * acc.count * n_b / n
    return Welford(n, mean, m2)


def covariance(acc: Welford) -> jax.Array:
    """Stan's regularised (co)variance of the accumulated draws."""
    n = jnp.maximum(acc.count, 2.0)
    sample = acc.m2 / (n - 1.0)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if acc.m2.ndim == 2:
        return (n / (n + 5.0)) * sample + shrink * jnp.eye(acc.m2.shape[0], dtype=sample.dtype)
    return (n / (n + 5.0)) * sample + shrink


def precondition_from_covariance(cov: jax.Array) -> jax.Array:
    """``L``: standard deviations ``(d,)`` for a diagonal, else the Cholesky factor ``(d, d)``."""
    if cov.ndim == 2:
        return jnp.linalg.cholesky(0.5 * (cov + cov.T))
    return jnp.sqrt(cov)


def to_z(scale: jax.Array, u: jax.Array) -> jax.Array:
    """``z = L u`` for ``u`` of shape ``(..., d)``."""
    return u @ scale.T if scale.ndim == 2 else u * scale


def to_u(scale: jax.Array, z: jax.Array) -> jax.Array:
    """``u = L^{-1} z`` for ``z`` of shape ``(..., d)``."""
    if scale.ndim == 2:
        flat = z.reshape(-1, z.shape[-1]).T
        u = jax.scipy.linalg.solve_triangular(scale, flat, lower=True)
        return u.T.reshape(z.shape)
    return z / scale


def grad_to_z(scale: jax.Array, grad_u: jax.Array) -> jax.Array:
    r"""``d log pi / dz = L^{-T} g_u`` from the gradient ``g_u = L^T g_z`` (rows ``(..., d)``)."""
    if scale.ndim == 2:
        flat = grad_u.reshape(-1, grad_u.shape[-1]).T
        g = jax.scipy.linalg.solve_triangular(scale.T, flat, lower=False)
        return g.T.reshape(grad_u.shape)
    return grad_u / scale


def grad_to_u(scale: jax.Array, grad_z: jax.Array) -> jax.Array:
    r"""``d log pi / du = L^T g_z`` for ``z = L u`` (rows ``(..., d)``)."""
    return grad_z @ scale if scale.ndim == 2 else grad_z * scale


#: kernel-state fields :func:`rescale_states` knows how to move between preconditioners
RESCALABLE_FIELDS = frozenset({"position", "logdensity", "logdensity_grad"})


def rescale_states(states, old_scale: jax.Array, new_scale: jax.Array):
    r"""Kernel states under ``old_scale`` re-expressed under ``new_scale``, without evaluating.

    The point :math:`z = L_{old} u` stays put: :math:`u' = L_{new}^{-1} z`, the
    log-density is unchanged (the dropped :math:`\log|\det L|` is constant) and
    the gradient moves as :math:`g_{u'} = L_{new}^T L_{old}^{-T} g_u`. For states
    whose fields are within :data:`RESCALABLE_FIELDS` (every BlackJAX state the
    samplers use); the caller re-initialises any other state.
    """
    z = to_z(old_scale, states.position)
    fields = {"position": to_u(new_scale, z)}
    if "logdensity_grad" in states._fields:
        fields["logdensity_grad"] = grad_to_u(
            new_scale, grad_to_z(old_scale, states.logdensity_grad)
        )
    return states._replace(**fields)


def slice_width_update(width: jax.Array, expansions: jax.Array, shrinks: jax.Array) -> jax.Array:
    """``w <- 2 w N_e / (N_e + N_c)``, smoothed (+1/2, +1) and clipped to a factor in [1/2, 2].

    ``shrinks`` counts shrinkage evaluations including the accepted one, so the
    contractions are ``shrinks - 1`` per chain.
    """
    n_e = jnp.sum(expansions)
    n_c = jnp.sum(jnp.maximum(shrinks - 1, 0))
    factor = 2.0 * (n_e + 0.5) / (n_e + n_c + 1.0)
    return width * jnp.clip(factor, 0.5, 2.0)
