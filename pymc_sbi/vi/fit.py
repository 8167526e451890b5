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
import optax
import pymc as pm
from pymc.sampling.jax import get_jaxified_graph

from pymc_sbi.terms.jaxmodel import jax_model, prior_positions
from pymc_sbi.vi.core import make_vi_optimizer, run, vi_algorithm
from pymc_sbi.vi.divergences import make_loss
from pymc_sbi.vi.families import Family, gaussian, make_family
from pymc_sbi.vi.posterior import VIPosterior

__all__ = ["fit_vi", "warmup_moments"]


def warmup_moments(positions: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Location and scale of draws ``(n, D)``: the mean, and the Cholesky factor of
    the covariance for the families with a full-rank affine (``gaussian``,
    ``maf``, ``nsf``; each starts as the moment-matched Gaussian of the draws),
    the standard deviations for ``gaussian_diag``."""
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
    *,
    family: str | Family = "maf",
    divergence: str = "rkl",
    num_particles: int = 128,
    learning_rate: float = 1e-3,
    lr_decay: float = 1.0,
    max_iters: int = 2000,
    min_iters: int = 200,
    clip_norm: float | None = 10.0,
    stl: bool = False,
    K: int = 8,
    alpha: float = 0.5,
    warmup_from_prior: bool = True,
    warmup_draws: int = 1000,
    check_convergence: bool = True,
    chunk_size: int = 100,
    optimizer: optax.GradientTransformation | None = None,
    flow_kwargs: dict[str, Any] | None = None,
    pretrain_iters: int | None = None,
    pretrain_learning_rate: float = 1e-2,
    seed: int | None = None,
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
    family
        ``"gaussian_diag"``, ``"gaussian"``, ``"maf"`` or ``"nsf"`` (see
        :mod:`pymc_sbi.vi.families`), or a :class:`Family`.
    divergence
        ``"rkl"`` (ELBO), ``"fkl"`` (forward KL by self-normalised importance
        sampling), ``"iw"`` (importance-weighted bound, ``K`` draws per group) or
        ``"alpha"`` (Rényi, order ``alpha``); see :mod:`pymc_sbi.vi.divergences`.
    num_particles
        Monte-Carlo draws per step (groups of ``K`` for ``iw``/``alpha``).
    learning_rate, lr_decay
        Adam learning rate, multiplied by ``lr_decay`` after every step.
    max_iters, min_iters
        Step budget; the convergence check starts after ``min_iters`` steps.
    clip_norm
        Global gradient-norm clipping (``None``: off).
    stl
        Sticking-the-landing gradient for ``rkl``.
    K, alpha
        Options of ``iw`` and ``alpha``.
    warmup_from_prior
        Start from the prior: the family's location and scale (Cholesky factor
        for ``gaussian``) are the moments of ``warmup_draws`` prior draws in the
        unconstrained space (``init_positions`` for a raw target). Off, or
        without draws: standard normal.
    check_convergence, chunk_size
        Stop once the chunk-mean loss stops improving (:mod:`pymc_sbi.vi.core`);
        steps run in compiled chunks of ``chunk_size``.
    optimizer
        An optax optimizer replacing Adam (clipping still applies).
    flow_kwargs
        Network options of ``maf``/``nsf``, e.g. ``{"num_transforms": 3,
        "hidden_features": 32}`` (defaults: 5 transforms, hidden 50).
    pretrain_iters, pretrain_learning_rate
        Flow families: at most ``pretrain_iters`` steps (Adam at
        ``pretrain_learning_rate``, no decay; the convergence check applies)
        fitting the outer affine alone, i.e. the full-rank Gaussian, with the
        same divergence, before the flow is trained (module docstring).
        Default: 500 under ``fkl``/``iw``/``alpha``, 0 (off) under ``rkl``.
    seed
        Same seed, same result.
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
    family_name = family.name if isinstance(family, Family) else family
    fam = make_family(family, dim, **(flow_kwargs or {}))
    seed = int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)
    k_init, k_run = jax.random.split(jax.random.key(seed))

    loc, scale = np.zeros(dim), np.ones(dim)
    if warmup_from_prior:
        positions = init_positions
        if positions is None and jm is not None:
            positions = prior_positions(jm.model, int(warmup_draws), seed=seed)
        if positions is not None:
            loc, scale = warmup_moments(positions, family_name)
    params = fam.init(k_init, jnp.asarray(loc), jnp.asarray(scale))

    options: dict[str, Any] = {}
    if stl:
        if divergence != "rkl":
            raise ValueError(f"stl applies to divergence='rkl' only, not {divergence!r}.")
        options["stl"] = True
    if divergence in ("iw", "alpha"):
        options["K"] = int(K)
    if divergence == "alpha":
        options["alpha"] = float(alpha)
    if pretrain_iters is None:
        pretrain_iters = 0 if divergence == "rkl" else 500
    pretrain_iters = int(pretrain_iters)
    if pretrain_iters < 0:
        raise ValueError(f"pretrain_iters must be >= 0, got {pretrain_iters}.")
    pretrain_history = None
    if pretrain_iters > 0 and _has_outer_affine(params):
        k_pre, k_run = jax.random.split(k_run)
        gauss = gaussian(dim)
        pre_loss = make_loss(divergence, gauss, logdensity_fn, num_particles, **options)
        pre_algo = vi_algorithm(
            pre_loss, make_vi_optimizer(None, pretrain_learning_rate, 1.0, clip_norm)
        )
        affine = {"loc": params["loc"], "tril_raw": params["tril_raw"]}
        pre_state, pretrain_history = run(
            pre_algo,
            pre_algo.init(affine),
            k_pre,
            max_iters=pretrain_iters,
            min_iters=min(int(min_iters), pretrain_iters),
            chunk_size=int(chunk_size),
            check_convergence=check_convergence,
            progressbar=progressbar,
            desc=f"VI pre-fit gaussian/{divergence}",
        )
        params = {**params, **pre_state.params}

    loss_fn = make_loss(divergence, fam, logdensity_fn, num_particles, **options)
    tx = make_vi_optimizer(optimizer, learning_rate, lr_decay, clip_norm)
    algo = vi_algorithm(loss_fn, tx)
    state, history = run(
        algo,
        algo.init(params),
        k_run,
        max_iters=int(max_iters),
        min_iters=int(min_iters),
        chunk_size=int(chunk_size),
        check_convergence=check_convergence,
        progressbar=progressbar,
        desc=f"VI {family_name}/{divergence}",
    )
    config = {
        "family": family_name,
        "divergence": divergence,
        "num_particles": int(num_particles),
        "learning_rate": learning_rate,
        "lr_decay": lr_decay,
        "max_iters": int(max_iters),
        "min_iters": int(min_iters),
        "clip_norm": clip_norm,
        "seed": seed,
        **options,
        "flow_kwargs": dict(flow_kwargs or {}),
    }
    if pretrain_history is not None:
        history["pretrain"] = pretrain_history
        config["pretrain_iters"] = pretrain_iters
        config["pretrain_learning_rate"] = pretrain_learning_rate
    return VIPosterior(fam, state.params, logdensity_fn, jm, history, config, map_fn)
