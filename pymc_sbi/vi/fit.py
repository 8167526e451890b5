r"""One-shot variational inference on a ``pm.Model`` or a raw ``logdensity_fn``: :func:`fit_vi`.

The recipe, reproducible by hand with the primitives of :mod:`pymc_sbi.vi.core`::

    k_init, k_run = jax.random.split(jax.random.key(seed))
    family = make_family(family, dim, **flow_kwargs)
    params = family.init(k_init, loc, scale)      # loc, scale from prior draws (warm-up)
    loss_fn = make_loss(divergence, family, logdensity_fn, num_particles, ...)
    algo = vi_algorithm(loss_fn, make_vi_optimizer(None, learning_rate, lr_decay, clip_norm))
    state, history = run(algo, algo.init(params), k_run, max_iters=..., ...)

Under the mass-covering divergences (``fkl``, ``iw``, ``alpha``) a ``maf``/``nsf``
fit starts with a Gaussian pre-fit (``pretrain_iters``, default 500): the flow
family's outer affine :math:`(\mu, L)` is fitted alone, i.e. the full-rank
``gaussian`` family with the same divergence (the flow frozen at the identity),
and flow and affine are trained jointly from there. Without it, when the
posterior is narrower than the warm-up (prior) draws, the spline absorbs the
location and scale inside its interval :math:`[-B, B]`: for the body of
:math:`q` the affine and the spline are interchangeable, only the few draws
beyond :math:`\pm B` tell them apart, so the affine keeps the prior's scale and
the spline's identity tails inherit it. Mass-covering divergences hardly
penalise such spare tails: NSF ended 10-40 % too wide on a 2-D Gaussian
(docs/vi.md). Under ``rkl`` the pre-fit is off by default: its mode-seeking
Gaussian is under-dispersed, and the flow inherits light tails (MAF on a banana:
PSIS k-hat 0.5-0.8 with, 0.2-0.35 without).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from pymc.sampling.jax import get_jaxified_graph

from pymc_sbi.seed import as_seed_int
from pymc_sbi.terms.jaxmodel import jax_model, prior_positions
from pymc_sbi.vi.config import VIConfig
from pymc_sbi.vi.core import make_vi_optimizer, run, vi_algorithm
from pymc_sbi.vi.divergences import make_loss
from pymc_sbi.vi.families import gaussian, make_family
from pymc_sbi.vi.posterior import VIPosterior

__all__ = ["fit_vi", "warmup_moments"]


def warmup_moments(positions: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Location and scale of draws ``(n, D)`` to start a family from.

    The mean, and the Cholesky factor of the covariance for the families with a
    full-rank affine (``gaussian``, ``maf``, ``nsf``; each starts as the
    moment-matched Gaussian of the draws),
    the standard deviations for ``gaussian_diag``.
    """
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 2 or positions.shape[0] < 2:
        raise ValueError(f"Warm-up draws must have shape (n >= 2, D), got {positions.shape}.")
    loc = positions.mean(axis=0)
    if family in ("gaussian", "maf", "nsf"):
        cov = np.atleast_2d(np.cov(positions, rowvar=False))
        cov = cov + 1e-6 * np.eye(cov.shape[0]) * max(float(np.trace(cov)) / cov.shape[0], 1e-12)
        return loc, np.linalg.cholesky(cov)
    return loc, np.maximum(positions.std(axis=0), 1e-6)


def _has_outer_affine(params: Any) -> bool:
    """Parameters of a flow family (``loc``, ``tril_raw``, ``flow``; :func:`.flow_family`)."""
    return isinstance(params, dict) and set(params) == {"loc", "tril_raw", "flow"}


def map_logdensity(model: pm.Model, jm) -> Callable[[jax.Array], jax.Array]:
    """The model's log-density without the transforms' Jacobians, as a function of ``z``."""
    graph = get_jaxified_graph(inputs=list(model.value_vars), outputs=[model.logp(jacobian=False)])
    return lambda z: graph(*jm.unravel(z))[0]


def fit_vi(
    model: pm.Model | None = None,
    config: VIConfig | None = None,
    *,
    seed=None,
    progressbar: bool = True,
    logdensity_fn: Callable[[jax.Array], jax.Array] | None = None,
    dim: int | None = None,
    init_positions: np.ndarray | None = None,
) -> VIPosterior:
    r"""Fit a variational family to a posterior in its unconstrained space.

    Parameters
    ----------
    model
        A ``pm.Model`` (default: the model on the context stack) whose free
        variables are continuous; neural terms of pymc_sbi work like any other.
        Leave it out and give ``logdensity_fn`` instead for a raw target.
    config
        A :class:`~pymc_sbi.vi.VIConfig` (default: a MAF fitted by the ELBO).
    seed
        An int or a JAX key; same seed, same result.
    progressbar
        Show a progress bar with the loss.
    logdensity_fn, dim
        A raw target ``theta (D,) -> log p(theta)`` (JAX, unnormalised) and its
        dimension, instead of a model.
    init_positions
        ``(n, D)`` draws to warm up from, for a raw target.

    Returns
    -------
    VIPosterior
        with ``sample(draws, seed) -> DataTree``, ``log_prob``, ``evaluate()``
        (PSIS k-hat) and ``map()``.
    """
    config = VIConfig() if config is None else config
    if not isinstance(config, VIConfig):
        raise TypeError(f"config must be a pymc_sbi.vi.VIConfig, got {type(config).__name__}.")
    c = config
    jm = map_fn = None
    if logdensity_fn is None:
        model = pm.modelcontext(model)
        jm = jax_model(model)
        logdensity_fn, dim = jm.logdensity_fn, jm.dim
        map_fn = map_logdensity(model, jm)
    elif model is not None:
        raise ValueError("Pass either a model or a logdensity_fn, not both.")
    elif dim is None:
        if init_positions is None:
            raise ValueError("A raw logdensity_fn needs its dimension: pass dim=D.")
        dim = int(np.shape(init_positions)[-1])
    dim = int(dim)
    if init_positions is not None and np.shape(init_positions)[-1:] != (dim,):
        raise ValueError(
            f"init_positions must have shape (n, {dim}), got {np.shape(init_positions)}."
        )
    family_name = c.family_name
    fam = make_family(c.family, dim, **c.flow_kwargs)
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else as_seed_int(seed)
    k_init, k_run = jax.random.split(jax.random.key(seed))

    loc, scale = np.zeros(dim), np.ones(dim)
    if c.warmup_from_prior:
        positions = init_positions
        if positions is None and jm is not None:
            positions = prior_positions(jm.model, c.warmup_draws, seed=seed)
        if positions is not None:
            loc, scale = warmup_moments(positions, family_name)
    params = fam.init(k_init, jnp.asarray(loc), jnp.asarray(scale))

    divergence, num_particles = c.divergence, c.num_particles
    options: dict[str, Any] = {}
    if c.stl:
        options["stl"] = True
    if divergence in ("iw", "alpha"):
        options["K"] = c.K
    if divergence == "alpha":
        options["alpha"] = float(c.alpha)
    pretrain_iters = c.pretrain_steps
    pretrain_history = None
    if pretrain_iters > 0 and _has_outer_affine(params):
        k_pre, k_run = jax.random.split(k_run)
        gauss = gaussian(dim)
        pre_loss = make_loss(divergence, gauss, logdensity_fn, num_particles, **options)
        pre_algo = vi_algorithm(
            pre_loss, make_vi_optimizer(None, c.pretrain_learning_rate, 1.0, c.clip_norm)
        )
        affine = {"loc": params["loc"], "tril_raw": params["tril_raw"]}
        pre_state, pretrain_history = run(
            pre_algo,
            pre_algo.init(affine),
            k_pre,
            max_iters=pretrain_iters,
            min_iters=min(c.min_iters, pretrain_iters),
            chunk_size=c.chunk_size,
            check_convergence=c.check_convergence,
            progressbar=progressbar,
            desc=f"VI pre-fit gaussian/{divergence}",
        )
        params = {**params, **pre_state.params}

    loss_fn = make_loss(divergence, fam, logdensity_fn, num_particles, **options)
    tx = make_vi_optimizer(c.optimizer, c.learning_rate, c.lr_decay, c.clip_norm)
    algo = vi_algorithm(loss_fn, tx)
    state, history = run(
        algo,
        algo.init(params),
        k_run,
        max_iters=c.max_iters,
        min_iters=c.min_iters,
        chunk_size=c.chunk_size,
        check_convergence=c.check_convergence,
        progressbar=progressbar,
        desc=f"VI {family_name}/{divergence}",
    )
    record = {**c.to_dict(), "seed": seed, "pretrain_iters": pretrain_iters}
    if pretrain_history is not None:
        history["pretrain"] = pretrain_history
    return VIPosterior(fam, state.params, logdensity_fn, jm, history, record, map_fn)
