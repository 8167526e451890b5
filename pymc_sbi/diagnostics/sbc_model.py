r"""Simulation-based calibration of a whole ``pm.Model``: hierarchical models, neural terms inside.

:func:`run_sbc` calibrates an estimator on the flat prior it was trained
under. The model a scientist reports is often larger: hyperpriors, one set of
parameters per subject, covariates per trial, a neural likelihood evaluated
per trial. :func:`run_sbc_model` checks *that* model end to end:

1. draw :math:`N` joint prior draws of all its free variables
   :math:`\phi^*_n` (hyperparameters and group parameters alike);
2. simulate a dataset :math:`y^*_n` from :math:`\phi^*_n` with the **real**
   simulator (the user's ``simulate`` function sees every free variable and
   deterministic of the draw, e.g. the per-trial parameters);
3. sample the model's posterior given each :math:`y^*_n` -- the model's own
   log-density with its observed data swapped for :math:`y^*_n`, so the
   neural term is what is being calibrated -- all :math:`N` at once as one
   product posterior on many vectorised chains
   (:func:`~pymc_sbi.diagnostics.inference.sample_product`);
4. rank every scalar of the chosen variables,
   :math:`r_{n,j} = \#\{l : \phi_{n,l,j} < \phi^*_{n,j}\}`.

Uniform ranks say the posterior of the *model as used* (surrogate, priors,
hierarchy, sampler) is calibrated; the same :class:`SBCResult` feeds
:func:`uniformity`, :func:`plot_sbc_ecdf` and :func:`expected_coverage`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm

from pymc_sbi.diagnostics.inference import sample_product
from pymc_sbi.diagnostics.sbc import SBCResult, sbc_from_samples
from pymc_sbi.terms.jaxmodel import jax_model, prior_positions

__all__ = ["data_logdensity_fn", "run_sbc_model"]


def data_logdensity_fn(model: pm.Model, data: str):
    """The model's log-density with the observed data ``data`` as an argument.

    Returns ``(jm, logdensity(z (dim,), y) -> scalar, data_shape)``: ``jm`` is
    :func:`pymc_sbi.terms.jaxmodel.jax_model` of ``model`` (its ``unravel`` and
    ``constrained_fn``), ``logdensity`` the joint log-density in the
    unconstrained space (Jacobians included) with the observed value of
    ``data`` replaced by ``y``.
    """
    from pymc.sampling.jax import get_jaxified_graph
    from pytensor.graph.replace import graph_replace

    observed = {rv.name: rv for rv in model.observed_RVs}
    if data not in observed:
        raise ValueError(
            f"{data!r} is not an observed variable of the model; observed: {sorted(observed)}."
        )
    value = model.rvs_to_values[observed[data]]
    shape = tuple(int(s) for s in np.shape(value.eval()))
    jm = jax_model(model)
    placeholder = value.type()
    placeholder.name = f"{data}_sbc"
    logp = graph_replace(model.logp(), {value: placeholder}, strict=True)
    graph = get_jaxified_graph(inputs=[*model.value_vars, placeholder], outputs=[logp])

    def logdensity(z: jax.Array, y: jax.Array) -> jax.Array:
        return graph(*jm.unravel(z), y)[0]

    return jm, logdensity, shape


def _labels(name: str, shape: tuple[int, ...]) -> list[str]:
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def run_sbc_model(
    model: pm.Model,
    simulate: Callable[[dict[str, np.ndarray], np.random.Generator], np.ndarray],
    data: str,
    *,
    var_names: Sequence[str] | None = None,
    num_datasets: int = 100,
    num_posterior_samples: int = 500,
    seed: int = 0,
    chains: int = 4,
    num_warmup: int = 500,
    kernel: str = "nuts",
    progressbar: bool = False,
    **sampler_options: Any,
) -> SBCResult:
    r"""SBC of ``model`` (any ``pm.Model``, e.g. hierarchical with a neural term).

    Parameters
    ----------
    model
        The inference model, with the observed variable ``data`` (its
        observed value only fixes the shape; it is replaced by simulations).
    simulate
        ``(draw, rng) -> y``: one dataset of ``data``'s shape from one prior
        draw. ``draw`` maps each free variable and deterministic of the model
        to its (constrained) value, e.g. per-trial parameters built from
        subject parameters and covariates; ``rng`` is a seeded NumPy
        ``Generator``. Use the real simulator here, not the surrogate.
    data
        Name of the observed variable to simulate.
    var_names
        Variables to rank (free variables or deterministics; default all
        free variables). Every scalar element gets a rank.
    num_datasets, num_posterior_samples
        :math:`N` and :math:`L` (rounded up to a multiple of ``chains``).
    seed
        Same seed, same result.
    chains, num_warmup, kernel, sampler_options
        Many-chain sampler settings (:func:`pymc_sbi.samplers.run_chains`);
        every chain samples all :math:`N` posteriors at once.
    progressbar
        Progress bars.

    Returns
    -------
    SBCResult
        ``labels`` name each ranked scalar (``"mu"``, ``"v[3]"``...); ``x``
        holds the simulated datasets; log densities are the unnormalised
        posterior in the unconstrained space (for expected coverage).
    """
    n, L = int(num_datasets), int(num_posterior_samples)
    if n < 2 or L < 1:
        raise ValueError(f"num_datasets must be >= 2 and num_posterior_samples >= 1; got {n}, {L}.")
    jm, logdensity, shape = data_logdensity_fn(model, data)
    known = [rv.name for rv in model.free_RVs] + [d.name for d in model.deterministics]
    names = list(var_names or [rv.name for rv in model.free_RVs])
    unknown = [v for v in names if v not in known]
    if unknown:
        raise ValueError(f"Unknown variable(s) {unknown}; the model has {known}.")
    seeds = np.random.SeedSequence(seed).generate_state(3)
    t0 = time.perf_counter()
    z_true = prior_positions(model, n, seed=int(seeds[0]))
    values = jax.jit(jax.vmap(jm.constrained_fn))(jnp.asarray(z_true))
    values = {k: np.asarray(v) for k, v in values.items()}
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seeds[1])).spawn(n)]
    ys = []
    for i in range(n):
        y = np.asarray(simulate({k: v[i] for k, v in values.items()}, rngs[i]), np.float64)
        if y.shape != shape:
            raise ValueError(
                f"simulate returned shape {y.shape}; the observed variable {data!r} has {shape}."
            )
        ys.append(y)
    y = np.stack(ys)
    bad = ~np.isfinite(y.reshape(n, -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"simulate returned non-finite data for {int(bad.sum())} of {n} draws.")
    t1 = time.perf_counter()
    chains = int(chains)
    per_chain = -(-L // chains)
    init = prior_positions(model, n * chains, seed=int(seeds[2]))
    z, lp_s, info = sample_product(
        logdensity, y, init, int(seeds[2]) + 1, chains, int(num_warmup), per_chain, kernel,
        progressbar, sampler_options,
    )  # fmt: skip
    draws = jax.jit(jax.vmap(jax.vmap(jm.constrained_fn)))(z)

    def flat(vals, lead):
        return np.concatenate(
            [np.asarray(vals[v], np.float64).reshape(*lead, -1) for v in names], axis=-1
        )

    theta_true = flat(values, (n,))
    samples = flat(draws, (n, z.shape[1]))
    lp_t = np.asarray(jax.jit(jax.vmap(logdensity))(jnp.asarray(z_true), jnp.asarray(y)))
    labels = [lab for v in names for lab in _labels(v, values[v].shape[1:])]
    info.update(method="model", data=data, simulate_s=t1 - t0, inference_s=time.perf_counter() - t1)
    return sbc_from_samples(
        theta_true, samples, log_density_true=lp_t, log_density_samples=lp_s, labels=labels,
        info=info, x=y,
    )  # fmt: skip
