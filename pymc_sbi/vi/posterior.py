r"""The fitted variational posterior: draws as a ``DataTree``, densities, quality check, MAP.

:meth:`VIPosterior.evaluate` asks how well :math:`q` matches the target
:math:`p` (known up to :math:`Z`) from :math:`n` draws :math:`\theta_i \sim q`
and their log-weights :math:`\log w_i = \log p(\theta_i) - \log q(\theta_i)`:

- **Pareto** :math:`\hat k` (Yao, Vehtari, Simpson & Gelman, 2018): the shape of
  a generalised Pareto fit to the largest weights, from ArviZ's PSIS
  (``arviz_stats``; its ``psislw`` follows the LOO sign convention and takes
  :math:`-\log w`). :math:`\hat k < 0.5`: :math:`q` is good;
  :math:`0.5 \le \hat k < 0.7`: usable, importance-weight the draws;
  :math:`\hat k \ge 0.7`: :math:`q` misses mass of :math:`p`, do not trust it.
- **Proportionality**: if :math:`q = p / Z` then :math:`\log w` is constant, so
  the correlation of :math:`\log q` with :math:`\log p` is 1 and the spread
  :math:`\mathrm{sd}(\log w)` is 0.
- The ELBO :math:`\overline{\log w}` and the importance-sampling estimate of
  :math:`\log Z`, :math:`\log\frac1n\sum_i w_i` (both :math:`\le \log Z` in expectation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from arviz_base import from_dict
from arviz_stats.base import array_stats
from xarray import DataTree

from pymc_sbi.terms.jaxmodel import JaxModel, to_datatree
from pymc_sbi.vi.families import Family

__all__ = ["VIDiagnostics", "VIPosterior"]


class VIDiagnostics(NamedTuple):
    """Result of :meth:`VIPosterior.evaluate` (see the module docstring)."""

    khat: float
    ess: float
    correlation: float
    log_weight_sd: float
    elbo: float
    log_evidence: float
    draws: int

    @property
    def ok(self) -> bool:
        """``khat < 0.7``: the draws are trustworthy (with importance weighting above 0.5)."""
        return bool(self.khat < 0.7)


def _seed_key(seed: int | jax.Array | None) -> jax.Array:
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    return jax.random.key(int(seed))


@dataclass(frozen=True, eq=False)
class VIPosterior:
    r"""A fitted variational family :math:`q(\theta)` on the unconstrained space.

    Attributes
    ----------
    family
        The :class:`~pymc_sbi.vi.families.Family`.
    params
        Its fitted parameters.
    logdensity_fn
        The target ``log p(theta)`` (unnormalised, unconstrained space, Jacobians in).
    jax_model
        The compiled ``pm.Model`` (``None`` for a raw ``logdensity_fn``): names,
        transforms and coords for :meth:`sample`.
    history, config
        Loss history and the options of the fit.
    map_logdensity_fn
        The density whose mode :meth:`map` finds: the model's log-density in the
        constrained parameterisation (no Jacobian), else ``logdensity_fn``.
    """

    family: Family
    params: Any
    logdensity_fn: Callable[[jax.Array], jax.Array]
    jax_model: JaxModel | None = None
    history: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    map_logdensity_fn: Callable[[jax.Array], jax.Array] | None = None

    @property
    def dim(self) -> int:
        """Dimension of the unconstrained parameter vector."""
        return self.family.dim

    def sample_theta(self, rng_key: jax.Array, n: int) -> jax.Array:
        """``n`` unconstrained draws ``(n, D)``."""
        return self._draw(rng_key, int(n))[0]

    def _draw(self, rng_key, n):
        return jax.jit(self.family.sample_and_log_prob, static_argnums=2)(self.params, rng_key, n)

    def log_prob(self, theta: jax.Array) -> jax.Array:
        r""":math:`\log q(\theta)` at unconstrained ``theta`` ``(..., D)``."""
        theta = jnp.asarray(theta)
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have shape (..., {self.dim}), got {tuple(theta.shape)}.")
        return jax.jit(self.family.log_prob)(self.params, theta)

    def sample(self, draws: int = 1000, seed: int | jax.Array | None = None) -> DataTree:
        """``draws`` draws as a ``DataTree`` (``posterior`` group with one chain).

        For a ``pm.Model`` the posterior holds its constrained variables with
        PyMC's names, dims and coords (as ``pm.sample``); for a raw
        ``logdensity_fn`` one variable ``theta`` with dim ``theta_dim``.
        ``sample_stats`` holds ``lp`` (the target log-density) and ``log_q``.
        """
        if int(draws) < 1:
            raise ValueError(f"draws must be a positive integer, got {draws}.")
        theta, log_q = self._draw(_seed_key(seed), int(draws))
        lp = jax.jit(jax.vmap(self.logdensity_fn))(theta)
        stats = {"lp": np.asarray(lp)[None], "log_q": np.asarray(log_q)[None]}
        attrs = {"vi_family": self.family.name, "vi_divergence": self.config.get("divergence", "")}
        if self.jax_model is not None:
            return to_datatree(self.jax_model, theta[None], stats, attrs=attrs)
        return from_dict(
            {"posterior": {"theta": np.asarray(theta)[None]}, "sample_stats": stats},
            dims={"theta": ["theta_dim"]},
            sample_dims=["chain", "draw"],
        )

    def evaluate(self, draws: int = 4000, seed: int | jax.Array | None = None) -> VIDiagnostics:
        r"""PSIS :math:`\hat k` and proportionality check from ``draws`` draws of :math:`q`."""
        if int(draws) < 100:
            raise ValueError(f"evaluate needs at least 100 draws for a Pareto fit, got {draws}.")
        theta, log_q = self._draw(_seed_key(seed), int(draws))
        log_p = np.asarray(jax.jit(jax.vmap(self.logdensity_fn))(theta), dtype=float)
        log_q = np.asarray(log_q, dtype=float)
        log_w = log_p - log_q
        finite = np.isfinite(log_w)
        if not finite.all():  # a draw outside the target's support: infinitely bad
            return VIDiagnostics(math.inf, 0.0, math.nan, math.inf, -math.inf, math.nan, draws)
        smoothed, khat = array_stats.psislw(-log_w, r_eff=1.0)
        ess = 1.0 / float(np.sum(np.exp(2.0 * smoothed)))
        corr = float(np.corrcoef(log_q, log_p)[0, 1]) if np.std(log_w) > 0 else 1.0
        log_z = float(np.logaddexp.reduce(log_w) - math.log(draws))
        return VIDiagnostics(
            khat=float(khat),
            ess=ess,
            correlation=corr,
            log_weight_sd=float(np.std(log_w)),
            elbo=float(np.mean(log_w)),
            log_evidence=log_z,
            draws=int(draws),
        )

    def map(
        self,
        num_starts: int = 1000,
        num_optimized: int = 10,
        num_iters: int = 500,
        learning_rate: float = 1e-2,
        seed: int | jax.Array | None = None,
    ) -> dict[str, np.ndarray] | np.ndarray:
        r"""Posterior mode by gradient ascent from the best of many starts.

        Draws ``num_starts`` points from :math:`q`, runs Adam on the target's
        log-density from the ``num_optimized`` best of them (vmapped) for
        ``num_iters`` steps, and returns the best end point: for a ``pm.Model``
        a dict of its constrained variables (the mode of the density in the
        model's own parameterisation, as ``pm.find_MAP``), else a ``(D,)`` array.
        """
        if not 1 <= num_optimized <= num_starts:
            raise ValueError(
                f"Need 1 <= num_optimized <= num_starts, got {num_optimized}, {num_starts}."
            )
        target = self.map_logdensity_fn or self.logdensity_fn
        starts = self.sample_theta(_seed_key(seed), num_starts)
        logp = jax.jit(jax.vmap(target))(starts)
        best = starts[jnp.argsort(-jnp.nan_to_num(logp, nan=-jnp.inf))[:num_optimized]]
        theta = _ascend(target, best, num_iters, learning_rate)
        final = jax.vmap(target)(theta)
        z = theta[jnp.nanargmax(final)]
        if self.jax_model is None:
            return np.asarray(z)
        values = jax.jit(self.jax_model.constrained_fn)(z)
        return {k: np.asarray(v) for k, v in values.items()}


def _ascend(target, theta0, num_iters, learning_rate):
    tx = optax.adam(learning_rate)
    grad = jax.vmap(jax.grad(lambda z: -target(z)))

    @jax.jit
    def run(theta0):
        def body(carry, _):
            theta, opt_state = carry
            updates, opt_state = tx.update(grad(theta), opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state), None

        (theta, _), _ = jax.lax.scan(body, (theta0, tx.init(theta0)), None, length=num_iters)
        return theta

    return run(theta0)
