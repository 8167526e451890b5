r"""Amortised VI: one conditional flow :math:`q_\phi(\theta \mid x)` for every observation.

For a prior :math:`p(\theta)` (a ``pm.Model``; :math:`\theta` is its flat
*unconstrained* vector :math:`z`, Jacobians in the prior density) and a
likelihood :math:`\ell(x \mid \theta)` that is either a trained neural
likelihood (an NLE :class:`~pymc_sbi.Estimator`) or a JAX function, minimise
the expected reverse KL over the marginal :math:`p(x)`,

.. math::

    \mathcal L(\phi) = \mathbb{E}_{x \sim p(x)}\,\mathbb{E}_{z \sim q_\phi(\cdot \mid x)}
        \big[\log q_\phi(z \mid x) - \log p(z) - \log \ell(x \mid \theta(z))\big]
    = \mathbb{E}_x \mathrm{KL}\big(q_\phi(\cdot \mid x) \,\|\, p(\cdot \mid x)\big)
      - \mathbb{E}_x \log p(x),

whose minimiser is the posterior for every :math:`x` in the support of
:math:`p(x)` (given enough flexibility). Each step takes ``batch_size``
observations from the pool of simulated ``x`` (a :class:`~pymc_sbi.Simulations`
record, an array, or fresh simulations from ``simulator``) and
``num_particles`` reparameterised draws per observation. Unlike NPE, it needs
a likelihood but no paired :math:`(\theta, x)`; unlike :func:`~pymc_sbi.vi.fit_vi`,
it is trained once and then conditions on any new :math:`x` in one network
pass. Only the ``x`` of the pool are used, so they should come from the prior
predictive of ``prior`` (amortisation is only as good as their coverage).

The context fed to the flow is the flattened :math:`x`, z-scored with the
pool's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from xarray import DataTree

from pymc_sbi.estimator import Estimator
from pymc_sbi.prior import param_spec
from pymc_sbi.seed import as_seed_int
from pymc_sbi.simulation import Simulations, simulate
from pymc_sbi.terms.jaxmodel import JaxModel, jax_model, prior_positions
from pymc_sbi.vi.config import VIConfig, amortized_recipe
from pymc_sbi.vi.core import make_vi_optimizer, run, vi_algorithm
from pymc_sbi.vi.families import Family, condition_family, make_family
from pymc_sbi.vi.fit import map_logdensity, warmup_moments
from pymc_sbi.vi.posterior import VIPosterior

__all__ = ["AmortizedVIPosterior", "train_amortized"]


@dataclass(frozen=True, eq=False)
class AmortizedVIPosterior:
    r"""A trained conditional flow :math:`q(\theta \mid x)` over the prior's unconstrained space.

    Attributes
    ----------
    family
        The conditional flow family (``context_dim`` = size of flattened ``x``).
    params
        Its trained parameters.
    jax_model
        The compiled prior model (names and transforms for the ``DataTree``).
    log_likelihood_fn
        ``(theta (d,), x) -> log l(x | theta)`` with ``theta`` constrained, in
        :func:`~pymc_sbi.param_spec` order.
    x_shape, x_mean, x_std
        Shape of one observation and the z-scoring statistics of the pool.
    history, config
        Loss history and training options.
    """

    family: Family
    params: Any
    jax_model: JaxModel
    log_likelihood_fn: Callable[[jax.Array, jax.Array], jax.Array]
    x_shape: tuple[int, ...]
    x_mean: jax.Array
    x_std: jax.Array
    history: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def context(self, x: Any) -> jax.Array:
        """Flattened, z-scored ``x`` of shape ``(..., c)`` (``x`` is ``(..., *x_shape)``)."""
        x = jnp.asarray(x, dtype=self.x_mean.dtype)
        n_core = len(self.x_shape)
        if tuple(x.shape[x.ndim - n_core :]) != self.x_shape or x.ndim < n_core:
            raise ValueError(f"x must have shape (..., {self.x_shape}), got {tuple(x.shape)}.")
        flat = x.reshape(*x.shape[: x.ndim - n_core], -1)
        return (flat - self.x_mean) / self.x_std

    def condition(self, x: Any) -> VIPosterior:
        r"""The :class:`VIPosterior` at one observation ``x``.

        Its ``sample``, ``evaluate`` and ``map`` work against the target
        :math:`p(z)\,\ell(x \mid \theta(z))`.
        """
        x = jnp.asarray(x)
        family = condition_family(self.family, self.context(x))
        jm, loglik = self.jax_model, self.log_likelihood_fn
        names = self.config["names"]
        target = _joint_logdensity(jm, loglik, names)
        theta_of = _constrained_flat(jm, names, param_spec(jm.model, names))
        prior_map = map_logdensity(jm.model, jm)
        return VIPosterior(
            family,
            self.params,
            lambda z: target(z, x),
            jm,
            self.history,
            {**self.config, "divergence": "amortized-rkl"},
            lambda z: prior_map(z) + loglik(theta_of(z), x),
        )

    def sample(self, x: Any, draws: int = 1000, seed: int | jax.Array | None = None) -> DataTree:
        """``draws`` posterior draws at one observation ``x``, as a ``DataTree`` (one chain)."""
        return self.condition(x).sample(draws, seed)

    def log_prob(self, z: jax.Array, x: Any) -> jax.Array:
        r""":math:`\log q(z \mid x)` at unconstrained ``z (..., D)``; leading shapes broadcast."""
        return self.family.log_prob(self.params, jnp.asarray(z), self.context(x))


def _constrained_flat(jm: JaxModel, names: tuple[str, ...], spec) -> Callable:
    def theta_of(z):
        values = jm.constrained_fn(z)
        return spec.flatten({n: values[n] for n in names}, xp=jnp)

    return theta_of


def _joint_logdensity(jm: JaxModel, loglik: Callable, names: tuple[str, ...]) -> Callable:
    spec = param_spec(jm.model, names)
    theta_of = _constrained_flat(jm, names, spec)
    return lambda z, x: jm.logdensity_fn(z) + loglik(theta_of(z), x)


def _likelihood(log_likelihood: Estimator | Callable) -> Callable:
    if isinstance(log_likelihood, Estimator):
        if log_likelihood.kind != "nle":
            raise ValueError(
                f"train_amortized needs a likelihood estimator (kind 'nle'), got "
                f"{log_likelihood.kind!r}."
            )
        return lambda theta, x: log_likelihood.log_prob(x, theta).astype(theta.dtype)
    if not callable(log_likelihood):
        raise TypeError("log_likelihood must be an NLE Estimator or a JAX function (theta, x).")
    return log_likelihood


def train_amortized(
    prior: pm.Model,
    log_likelihood: Estimator | Callable[[jax.Array, jax.Array], jax.Array],
    x: Simulations | np.ndarray | None = None,
    config: VIConfig | None = None,
    *,
    simulator: Callable | None = None,
    num_simulations: int = 10_000,
    batch_size: int = 64,
    seed=None,
    progressbar: bool = True,
) -> AmortizedVIPosterior:
    r"""Fit a conditional flow :math:`q(\theta \mid x)` by the expected ELBO (module docstring).

    Parameters
    ----------
    prior
        The prior ``pm.Model`` (its free variables are :math:`\theta`).
    log_likelihood
        An NLE :class:`~pymc_sbi.Estimator` trained on ``prior``'s parameters,
        or a JAX function ``(theta (d,), x (*x_shape)) -> log l(x | theta)`` with
        ``theta`` constrained and flattened in :func:`~pymc_sbi.param_spec` order.
    x
        The pool of observations ``(n, *x_shape)``, or a ``Simulations`` record
        (its ``x``). Default: ``num_simulations`` fresh simulations of ``simulator``.
    config
        A :class:`~pymc_sbi.vi.VIConfig` with family ``"maf"`` or ``"nsf"`` and
        divergence ``"rkl"`` (default: :func:`~pymc_sbi.vi.amortized_recipe`);
        ``num_particles`` is per observation.
    simulator, num_simulations
        Simulate the pool when ``x`` is not given.
    batch_size
        Observations per step.
    seed, progressbar
        As in :func:`~pymc_sbi.fit_vi`.
    """
    config = amortized_recipe() if config is None else config
    if not isinstance(config, VIConfig):
        raise TypeError(f"config must be a pymc_sbi.vi.VIConfig, got {type(config).__name__}.")
    family, num_particles, stl = config.family_name, config.num_particles, config.stl
    if config.divergence != "rkl":
        raise ValueError(
            f"Amortised VI maximises the ELBO: divergence 'rkl', not {config.divergence!r}."
        )
    if family not in ("maf", "nsf"):
        raise ValueError(
            f"Amortised VI needs a conditional flow: family 'maf' or 'nsf', not {family!r}."
        )
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else as_seed_int(seed)
    loglik = _likelihood(log_likelihood)
    if isinstance(log_likelihood, Estimator):
        names = tuple(log_likelihood.spec.names)
    else:
        names = tuple(rv.name for rv in prior.free_RVs)
    if x is None:
        if simulator is None:
            raise ValueError("Pass the observations x (array or Simulations) or a simulator.")
        x = simulate(prior, simulator, int(num_simulations), seed=seed, progressbar=progressbar)
    pool = jnp.asarray(x.x if isinstance(x, Simulations) else x)
    if pool.ndim < 1 or pool.shape[0] < 2:
        raise ValueError(f"x must be a pool of observations (n >= 2, *x_shape), got {pool.shape}.")
    x_shape = tuple(pool.shape[1:])
    jm = jax_model(prior)
    pool = pool.astype(jnp.result_type(float))
    flat = pool.reshape(pool.shape[0], -1)
    x_mean, x_std = flat.mean(0), jnp.maximum(flat.std(0), 1e-8)
    fam = make_family(family, jm.dim, context_dim=flat.shape[1], **config.flow_kwargs)
    target = jax.vmap(_joint_logdensity(jm, loglik, names))

    k_init, k_run = jax.random.split(jax.random.key(seed))
    loc, scale = warmup_moments(prior_positions(prior, 1000, seed=seed), family)
    params = fam.init(k_init, jnp.asarray(loc), jnp.asarray(scale))

    def loss_fn(params, rng_key):
        k_idx, k_draw = jax.random.split(rng_key)
        x_b = pool[jax.random.randint(k_idx, (batch_size,), 0, pool.shape[0])]
        ctx = jnp.repeat((x_b.reshape(batch_size, -1) - x_mean) / x_std, num_particles, axis=0)
        x_rep = jnp.repeat(x_b, num_particles, axis=0)
        z, log_q = fam.sample_and_log_prob(params, k_draw, batch_size * num_particles, ctx)
        if stl:
            log_q = fam.log_prob(jax.lax.stop_gradient(params), z, ctx)
        elbo = jnp.mean(target(z, x_rep) - log_q)
        return -elbo, {"loss": -elbo, "elbo": jax.lax.stop_gradient(elbo)}

    tx = make_vi_optimizer(
        config.optimizer, config.learning_rate, config.lr_decay, config.clip_norm
    )
    algo = vi_algorithm(loss_fn, tx)
    state, history = run(
        algo,
        algo.init(params),
        k_run,
        max_iters=config.max_iters,
        min_iters=config.min_iters,
        chunk_size=config.chunk_size,
        check_convergence=config.check_convergence,
        progressbar=progressbar,
        desc=f"amortised VI {family}",
    )
    record = {
        **config.to_dict(),
        "names": names,
        "batch_size": int(batch_size),
        "seed": seed,
        "num_observations": int(pool.shape[0]),
    }
    return AmortizedVIPosterior(
        fam, state.params, jm, loglik, x_shape, x_mean, x_std, history, record
    )
