r"""Divergences between a variational family :math:`q_\phi` and an unnormalised target :math:`p`.

Every loss is a pure function
``loss(params, rng_key, family, logdensity_fn, num_particles, ...) -> (loss, metrics)``,
differentiable in ``params``, where ``logdensity_fn(theta (D,)) -> log p(theta)``
is the unnormalised log posterior (vmapped here). With the log-weights
:math:`\log w = \log p(\theta) - \log q_\phi(\theta)`, :math:`\theta \sim q_\phi`:

``rkl`` -- reverse KL, the negative ELBO
    :math:`-\mathbb{E}_q[\log w]` with reparameterised samples. ``stl=True``
    uses the sticking-the-landing estimator (Roeder et al., 2017): the score
    term is dropped by evaluating :math:`\log q` with stopped parameters, so the
    gradient variance vanishes when :math:`q = p`. Mode seeking.
``fkl`` -- forward KL :math:`\mathrm{KL}(p \,\|\, q)`
    by self-normalised importance sampling:
    :math:`-\sum_i \bar w_i \log q_\phi(\theta_i)`, :math:`\bar w = \mathrm{softmax}(\log w)`
    with the draws and weights held fixed. Mass covering, but only as good as
    the importance weights (needs a :math:`q` that already covers :math:`p`).
``iw`` -- importance-weighted bound (IWAE; Burda et al., 2016)
    :math:`-\mathbb{E}\big[\log \tfrac1K \sum_{k=1}^K w_k\big]`, ``num_particles``
    groups of ``K`` draws; tighter than the ELBO, tends to the evidence as K grows.
``alpha`` -- Rényi :math:`\alpha`-divergence (variational Rényi bound; Li & Turner, 2016)
    :math:`-\mathbb{E}\big[\tfrac{1}{1-\alpha}\log\tfrac1K\sum_k w_k^{1-\alpha}\big]`;
    :math:`\alpha \to 1` is the ELBO, :math:`\alpha = 0` the IW bound;
    :math:`\alpha < 1` covers more mass.

``metrics`` always holds ``loss`` and ``elbo`` (the plain Monte-Carlo ELBO
:math:`\overline{\log w}`, a lower bound on :math:`\log Z`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from pymc_sbi.vi.families import Family

__all__ = [
    "DIVERGENCES",
    "alpha_divergence",
    "forward_kl",
    "importance_weighted",
    "make_loss",
    "reverse_kl",
]

LossFn = Callable[[Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def _log_weights(family, params, rng_key, logdensity_fn, n):
    theta, log_q = family.sample_and_log_prob(params, rng_key, n)
    log_p = jax.vmap(logdensity_fn)(theta)
    return theta, log_q, log_p


def reverse_kl(
    params: Any,
    rng_key: jax.Array,
    family: Family,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_particles: int,
    stl: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""Negative ELBO :math:`-\mathbb{E}_q[\log p - \log q]` (optionally sticking the landing)."""
    theta, log_q, log_p = _log_weights(family, params, rng_key, logdensity_fn, num_particles)
    if stl:
        log_q = family.log_prob(jax.lax.stop_gradient(params), theta)
    elbo = jnp.mean(log_p - log_q)
    return -elbo, {"loss": -elbo, "elbo": jax.lax.stop_gradient(elbo)}


def forward_kl(
    params: Any,
    rng_key: jax.Array,
    family: Family,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_particles: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""Forward KL by self-normalised importance sampling: :math:`-\sum_i \bar w_i \log q_i`.

    ``metrics["ess"]`` is the importance sampling effective sample size
    :math:`1 / \sum_i \bar w_i^2` of the step.
    """
    theta, log_q, log_p = _log_weights(
        family, jax.lax.stop_gradient(params), rng_key, logdensity_fn, num_particles
    )
    theta = jax.lax.stop_gradient(theta)
    log_w = log_p - log_q
    weights = jax.nn.softmax(log_w)
    loss = -jnp.sum(weights * family.log_prob(params, theta))
    return loss, {"loss": loss, "elbo": jnp.mean(log_w), "ess": 1.0 / jnp.sum(weights**2)}


def _grouped_log_weights(family, params, rng_key, logdensity_fn, num_particles, K):
    if K < 1:
        raise ValueError(f"K (draws per importance-weighted group) must be >= 1, got {K}.")
    _, log_q, log_p = _log_weights(family, params, rng_key, logdensity_fn, num_particles * K)
    return (log_p - log_q).reshape(num_particles, K)


def importance_weighted(
    params: Any,
    rng_key: jax.Array,
    family: Family,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_particles: int,
    K: int = 8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""Negative importance-weighted bound, ``num_particles`` groups of ``K`` draws."""
    log_w = _grouped_log_weights(family, params, rng_key, logdensity_fn, num_particles, K)
    bound = jnp.mean(jax.nn.logsumexp(log_w, axis=1) - math.log(K))
    return -bound, {"loss": -bound, "elbo": jax.lax.stop_gradient(jnp.mean(log_w))}


def alpha_divergence(
    params: Any,
    rng_key: jax.Array,
    family: Family,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_particles: int,
    alpha: float = 0.5,
    K: int = 8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    r"""Negative variational Rényi bound of order ``alpha`` (``alpha != 1``), groups of ``K``."""
    if alpha == 1.0:
        raise ValueError("alpha = 1 is the ELBO: use divergence='rkl'.")
    log_w = _grouped_log_weights(family, params, rng_key, logdensity_fn, num_particles, K)
    scaled = (1.0 - alpha) * log_w
    bound = jnp.mean(jax.nn.logsumexp(scaled, axis=1) - math.log(K)) / (1.0 - alpha)
    return -bound, {"loss": -bound, "elbo": jax.lax.stop_gradient(jnp.mean(log_w))}


DIVERGENCES: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
    "rkl": reverse_kl,
    "fkl": forward_kl,
    "iw": importance_weighted,
    "alpha": alpha_divergence,
}

_OPTIONS = {"rkl": {"stl"}, "fkl": set(), "iw": {"K"}, "alpha": {"alpha", "K"}}


def make_loss(
    divergence: str,
    family: Family,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    num_particles: int,
    **options: Any,
) -> LossFn:
    """``loss(params, rng_key) -> (loss, metrics)`` for a named divergence.

    ``options``: ``stl`` (rkl), ``K`` (iw, alpha), ``alpha`` (alpha); options
    that the divergence does not take raise ``ValueError``.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"Unknown divergence {divergence!r}; choose one of {sorted(DIVERGENCES)}.")
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be a positive integer, got {num_particles}.")
    unknown = set(options) - _OPTIONS[divergence]
    if unknown:
        raise ValueError(
            f"Option(s) {sorted(unknown)} do not apply to divergence {divergence!r} "
            f"(it takes {sorted(_OPTIONS[divergence]) or 'none'})."
        )
    return partial(
        DIVERGENCES[divergence],
        family=family,
        logdensity_fn=logdensity_fn,
        num_particles=int(num_particles),
        **options,
    )
