"""``ps.sample``: many vectorised BlackJAX chains on any ``pm.Model``, returned as a ``DataTree``.

The model's joint log-density in the unconstrained space (PyMC's JAX backend,
neural terms inlined; :func:`pymc_sbi.terms.jaxmodel.jax_model`) goes to
:func:`pymc_sbi.samplers.run_chains`; the draws come back in the model's
constrained variables with PyMC's names, dims and coords. This does not go
through ``pm.sample(nuts_sampler="blackjax")``, which is broken with blackjax
1.7 (PyMC issue #8367).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import pymc as pm
from xarray import DataTree

from pymc_sbi.prior import prior_initvals
from pymc_sbi.samplers.driver import run_chains
from pymc_sbi.seed import as_seed_int
from pymc_sbi.terms.jaxmodel import jax_model, prior_logdensity_fn, prior_positions, to_datatree

__all__ = ["initial_positions", "pymc_sample", "resample_positions", "sample"]


def resample_positions(
    jm, chains: int, seed: int, num_candidates: int | None = None, chunk: int = 8192
) -> np.ndarray:
    r"""``chains`` starting points by sampling-importance-resampling from the prior.

    ``num_candidates`` (default ``max(10_000, 10 * chains)``) joint prior draws
    :math:`z_i` are weighted by the likelihood,
    :math:`w_i \propto \pi(z_i) / p_0(z_i)` (the model's log-density minus its
    prior part, :func:`~pymc_sbi.terms.jaxmodel.prior_logdensity_fn`), and ``chains``
    of them are drawn with replacement in proportion to :math:`w_i` (sbi's
    ``init_strategy="resample"``). The chains then start inside the posterior's
    typical set, each mode weighted by its posterior mass up to the Monte-Carlo
    error of the weights, so a short warm-up suffices even for a kernel that
    moves slowly between regions (MALA, RMH).
    """
    n = int(num_candidates or max(10_000, 10 * chains))
    if n < 1:
        raise ValueError(f"num_candidates must be a positive integer, got {num_candidates}.")
    z = prior_positions(jm.model, n, seed=seed)
    log_prior = prior_logdensity_fn(jm)
    log_lik = jax.jit(jax.vmap(lambda v: jm.logdensity_fn(v) - log_prior(v)))
    # equal chunks of at most `chunk` (the last padded with copies of the first draw):
    # one compilation
    n_chunks = -(-n // int(chunk))
    size = -(-n // n_chunks)
    padded = np.concatenate([z, np.repeat(z[:1], -n % size, axis=0)])
    logw = np.concatenate(
        [np.asarray(log_lik(padded[i : i + size])) for i in range(0, len(padded), size)]
    )[:n]
    logw = np.where(np.isfinite(logw), logw, -np.inf)
    if not np.isfinite(logw).any():
        raise ValueError(
            f"init='resample': none of the {n} prior draws has a finite likelihood; "
            "pass init='prior' or an array of starting points."
        )
    p = np.exp(logw - logw.max())
    p /= p.sum()
    idx = np.random.default_rng(seed).choice(n, size=chains, replace=True, p=p)
    return z[idx]


def initial_positions(jm, init: Any, chains: int, seed: int) -> np.ndarray:
    """``(chains, dim)`` unconstrained starting points from ``init``.

    ``"prior"``: one joint prior draw per chain; ``"resample"``: prior draws
    resampled by their likelihood (:func:`resample_positions`); an array:
    ``(chains, dim)`` unconstrained positions (or ``(dim,)``, repeated); an
    object with ``sample(rng_key, n)`` (an IMH proposal, e.g. an NPE
    posterior): its draws (non-finite rows replaced by prior draws).
    """
    if isinstance(init, str):
        if init == "resample":
            return resample_positions(jm, chains, seed)
        if init != "prior":
            raise ValueError(
                f"init must be 'prior', 'resample', an array or a proposal, got {init!r}."
            )
        return prior_positions(jm.model, chains, seed=seed)
    if hasattr(init, "sample"):
        z = np.array(init.sample(jax.random.key(seed), chains), dtype=float)
        bad = ~np.all(np.isfinite(z), axis=1)
        if bad.any():
            z[bad] = prior_positions(jm.model, int(bad.sum()), seed=seed)
        return z
    z = np.asarray(init, dtype=float)
    if z.shape == (jm.dim,):
        z = np.broadcast_to(z, (chains, jm.dim)).copy()
    if z.shape != (chains, jm.dim):
        raise ValueError(
            f"init array must have shape (chains, dim) = ({chains}, {jm.dim}) in the "
            f"unconstrained space of {list(jm.value_names)}, got {z.shape}."
        )
    return z


def sample(
    model: pm.Model | None = None,
    *,
    kernel: str = "nuts",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    init: Any = "prior",
    progressbar: bool = True,
    target_accept: float | None = None,
    metric: str = "diag",
    var_names: Sequence[str] | None = None,
    **kernel_kwargs: Any,
) -> DataTree:
    """Sample ``model`` with ``chains`` vectorised BlackJAX chains of ``kernel``.

    Parameters
    ----------
    model
        Any ``pm.Model`` with continuous free variables (default: the context
        model), with or without pymc_sbi neural terms.
    kernel
        ``"nuts"``, ``"hmc"``, ``"mala"``, ``"rmh"``, ``"slice"`` or ``"imh"``.
    draws, tune
        Kept draws and warm-up steps per chain.
    chains
        Number of chains, all advanced together by one vmapped step (tens to
        thousands are cheap for a small model).
    seed
        An int or a JAX key (``None``: a random one). Same seed, same draws.
    init
        ``"prior"`` (each chain at its own joint prior draw: spreads chains over
        the modes of a multimodal posterior), ``"resample"`` (prior draws
        resampled in proportion to their likelihood, sbi's default MCMC
        initialisation: chains start in the typical set with the modes
        weighted by their mass; :func:`resample_positions`), a
        ``(chains, dim)`` array of unconstrained positions, or a proposal
        with ``sample(rng_key, n)``.
    progressbar
        tqdm bars for warm-up and sampling.
    target_accept
        Dual-averaging target (NUTS 0.8, HMC 0.65, MALA 0.574, RMH 0.234).
    metric
        ``"diag"`` or ``"dense"`` preconditioner, estimated across chains.
    var_names
        Constrained variables to store (default: all free variables and
        deterministics, as ``pm.sample``).
    **kernel_kwargs
        Kernel options (see :func:`~pymc_sbi.samplers.run_chains`), e.g.
        ``proposal=`` for ``"imh"``, ``max_tree_depth=`` for ``"nuts"``.

    Returns
    -------
    xarray.DataTree
        ``posterior`` (constrained variables, PyMC names/dims/coords),
        ``sample_stats`` (``lp``, ``acceptance_rate``, ``diverging``,
        ``step_size``, ``tree_depth``, ``n_steps``, ``energy`` as the kernel
        has them), ``observed_data``/``constant_data``; attrs record the kernel,
        tuned parameters and timings.
    """
    model = pm.modelcontext(model)
    if int(chains) < 1:
        raise ValueError(f"chains must be a positive integer, got {chains}.")
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31 - 1))
    seq = np.random.SeedSequence(as_seed_int(seed))
    init_seed, key_seed = (int(s.generate_state(1)[0]) for s in seq.spawn(2))
    jm = jax_model(model, var_names=var_names)
    positions = initial_positions(jm, init, int(chains), init_seed)
    if kernel == "imh" and "proposal" not in kernel_kwargs and hasattr(init, "log_prob"):
        kernel_kwargs["proposal"] = init
    t0 = time.perf_counter()
    result = run_chains(
        jax.random.key(key_seed),
        jm.logdensity_fn,
        positions,
        kernel=kernel,
        num_warmup=int(tune),
        num_samples=int(draws),
        target_accept=target_accept,
        metric=metric,
        progressbar=progressbar,
        **kernel_kwargs,
    )
    z = np.asarray(result.positions)
    elapsed = time.perf_counter() - t0
    attrs = {
        "sampler": f"pymc_sbi.samplers ({kernel}, blackjax)",
        "kernel": kernel,
        "tuning_steps": int(tune),
        "sampling_time": float(elapsed),
        "tuned_param": float(result.tuned.param),
        "preconditioner": "none" if kernel == "imh" else metric,
        "random_seed": as_seed_int(seed),
    }
    with warnings.catch_warnings():  # 1,000 chains x 100 draws is deliberate here
        warnings.filterwarnings("ignore", message="Found chain dimension to be longer")
        return to_datatree(jm, z, result.sample_stats, attrs=attrs)


def pymc_sample(
    model: pm.Model,
    *,
    draws: int,
    tune: int,
    chains: int,
    seed,
    progressbar: bool = False,
    **sample_kwargs: Any,
) -> DataTree:
    """``pm.sample`` of ``model``; without ``sample_kwargs``, the fork-safe fast path.

    That path is NumPyro's NUTS with vectorised chains, each started at its own
    prior draw (:func:`pymc_sbi.prior.prior_initvals`), so that chains spread
    over a multimodal posterior and no process is forked (a JAX Op deadlocks
    in a forked worker). Convergence checks are left to the caller.
    """
    seed = as_seed_int(seed)
    if not sample_kwargs:
        sample_kwargs = dict(
            nuts_sampler="numpyro",
            nuts={"chain_method": "vectorized"},
            initvals=prior_initvals(model, int(chains), seed=seed),
        )
    with model:
        return pm.sample(
            draws=int(draws),
            tune=int(tune),
            chains=int(chains),
            random_seed=seed,
            progressbar=progressbar,
            compute_convergence_checks=False,
            **sample_kwargs,
        )
