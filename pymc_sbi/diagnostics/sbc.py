r"""Simulation-based calibration (SBC) of a neural estimator.

SBC [1]_ checks a posterior approximation on data it could have produced:
draw :math:`\theta^*_n \sim p(\theta)` and :math:`x^*_n \sim p(x \mid \theta^*_n)`
for :math:`n = 1..N`, draw :math:`L` samples :math:`\theta_{n,l}` from the
approximate posterior given :math:`x^*_n`, and compute per parameter :math:`j`
the rank

.. math::

    r_{n,j} = \#\{\,l : \theta_{n,l,j} < \theta^*_{n,j}\,\} \in \{0, \dots, L\}.

If the approximate posterior equals the true one, each :math:`r_{\cdot,j}` is
uniform on :math:`\{0, \dots, L\}` (the true parameter is just one more draw
from the same distribution). Over-confident posteriors pile ranks at both
ends, under-confident ones in the middle, biased ones at one end. The
uniformity tests come from arviz-stats (``pot_c``, a pointwise order-based
test with Cauchy combination) and a :math:`\chi^2` test on a rank histogram.

Inference for all :math:`N` datasets is vectorised
(:func:`pymc_sbi.diagnostics.posterior_draws`): amortised NPE in one batched
pass, NLE/MNLE/NRE by many-chain MCMC on the product of the :math:`N`
posteriors in one compiled program (see :mod:`pymc_sbi.diagnostics.inference`),
never :math:`N` sequential ``pm.sample`` calls.

References
----------
.. [1] Talts, S., Betancourt, M., Simpson, D., Vehtari, A. and Gelman, A.
   (2018). Validating Bayesian inference algorithms with simulation-based
   calibration. arXiv:1804.06788.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.diagnostics.inference import mcmc_posterior, posterior_draws
from pymc_sbi.prior import draw_prior, param_spec
from pymc_sbi.simulation import run_simulator
from pymc_sbi.terms.jaxmodel import jax_model, prior_positions

__all__ = ["SBCResult", "run_sbc", "sbc_from_samples", "sbc_ranks", "sbc_to_datatree", "uniformity"]


class SBCResult(NamedTuple):
    r"""Ranks and everything needed to re-analyse an SBC run.

    Attributes
    ----------
    ranks
        ``(N, d)`` integer ranks in ``0..L``.
    num_posterior_samples
        ``L``, posterior draws per dataset.
    theta_true
        ``(N, d)`` prior draws :math:`\theta^*`.
    posterior_samples
        ``(N, L, d)`` posterior draws.
    log_density_true, log_density_samples
        ``(N,)`` and ``(N, L)`` log posterior densities (up to a constant per
        dataset) at :math:`\theta^*` and at the draws, for expected coverage;
        ``None`` if unknown. NPE: :math:`\log q(\theta \mid x)`; MCMC: the
        unnormalised posterior in the sampler's unconstrained space.
    labels
        Names of the ``d`` columns (``"theta[0]"``...).
    spec
        The estimator's :class:`~pymc_sbi.ParamSpec`, or ``None``.
    info
        Method, timings (``simulate_s``, ``inference_s``) and sampler details.
    x
        ``(N, *x_shape)`` (or ``(N, T, *x_shape)`` with trials) simulated data, or ``None``.
    """

    ranks: np.ndarray
    num_posterior_samples: int
    theta_true: np.ndarray
    posterior_samples: np.ndarray
    log_density_true: np.ndarray | None
    log_density_samples: np.ndarray | None
    labels: tuple[str, ...]
    spec: Any = None
    info: dict[str, Any] | None = None
    x: np.ndarray | None = None

    @property
    def pit(self) -> np.ndarray:
        """Ranks mapped to ``(0, 1)``: ``(r + 0.5) / (L + 1)``, uniform under calibration."""
        return (self.ranks + 0.5) / (self.num_posterior_samples + 1)


def sbc_ranks(theta_true, posterior_samples) -> np.ndarray:
    r"""Ranks :math:`r_{n,j} = \#\{l : \theta_{n,l,j} < \theta^*_{n,j}\}`.

    Parameters
    ----------
    theta_true
        ``(N, d)`` true parameters.
    posterior_samples
        ``(N, L, d)`` posterior draws per dataset.

    Returns
    -------
    np.ndarray
        ``(N, d)`` integer ranks in ``0..L``.
    """
    theta_true = np.asarray(theta_true, np.float64)
    samples = np.asarray(posterior_samples, np.float64)
    if theta_true.ndim != 2 or samples.ndim != 3 or samples.shape[0] != theta_true.shape[0]:
        raise ValueError(
            f"theta_true must be (N, d) and posterior_samples (N, L, d); got "
            f"{theta_true.shape} and {samples.shape}."
        )
    if samples.shape[2] != theta_true.shape[1]:
        raise ValueError(
            f"posterior_samples has d={samples.shape[2]} columns, theta_true "
            f"d={theta_true.shape[1]}."
        )
    return np.sum(samples < theta_true[:, None, :], axis=1).astype(np.int64)


def uniformity(result: SBCResult, *, bins: int | None = None) -> dict[str, np.ndarray]:
    r"""Uniformity tests of the SBC ranks, one p-value per parameter.

    - ``pot_c``: arviz-stats' pointwise order-based test with Cauchy
      combination on the PIT values ``(r + 0.5) / (L + 1)`` (sensitive to
      local departures, e.g. both tails at once);
    - ``chi2``: Pearson :math:`\chi^2` of a rank histogram with ``bins`` equal
      bins of ``0..L`` (default ``min(20, max(N // 10, 2))``, so about 10
      expected counts per bin or more), against uniform expected counts.

    Returns
    -------
    dict
        ``{"pot_c": (d,), "chi2": (d,)}`` p-values.
    """
    from arviz_stats.base import array_stats
    from scipy import stats

    n, d = result.ranks.shape
    L = result.num_posterior_samples
    bins = int(bins or min(20, max(n // 10, 2)))
    # bin edges on the L + 1 rank values so every bin holds the same number of them
    edges = np.linspace(0, L + 1, bins + 1)
    # expected count per bin: its share of the L + 1 equally likely rank values
    expected = n * np.histogram(np.arange(L + 1) + 0.5, bins=edges)[0] / (L + 1)
    p_pot = np.empty(d)
    p_chi2 = np.empty(d)
    for j in range(d):
        p_pot[j] = float(array_stats.uniformity_test(result.pit[:, j], method="pot_c")[0])
        counts, _ = np.histogram(result.ranks[:, j] + 0.5, bins=edges)
        p_chi2[j] = float(stats.chisquare(counts, expected).pvalue)
    return {"pot_c": p_pot, "chi2": p_chi2}


def sbc_from_samples(
    theta_true,
    posterior_samples,
    *,
    log_density_true=None,
    log_density_samples=None,
    labels=None,
    spec=None,
    info: dict[str, Any] | None = None,
    x=None,
    obs_dim: str = "observation",
) -> SBCResult:
    """An :class:`SBCResult` from posterior draws obtained any way.

    ``posterior_samples`` is an ``(N, L, d)`` array, or an ArviZ ``DataTree``
    (``posterior`` group) / ``Dataset`` whose variables have dims
    ``(chain, draw, obs_dim, ...)`` -- what :func:`pymc_sbi.posterior_samples`
    returns for a batch of ``N`` observations. Variables are read in
    ``spec.names`` order (all variables if ``spec`` is None) and ``chain`` and
    ``draw`` are stacked into the ``L`` draws.
    """
    posterior_samples = _batched_samples(posterior_samples, spec, obs_dim)
    ranks = sbc_ranks(theta_true, posterior_samples)
    samples = np.asarray(posterior_samples, np.float64)
    d = ranks.shape[1]
    labels = tuple(
        labels or (spec.labels if spec is not None else [f"theta[{j}]" for j in range(d)])
    )
    lt = None if log_density_true is None else np.asarray(log_density_true, np.float64)
    ls = None if log_density_samples is None else np.asarray(log_density_samples, np.float64)
    if (lt is None) != (ls is None):
        raise ValueError("Give both log_density_true and log_density_samples, or neither.")
    if lt is not None and (lt.shape != ranks.shape[:1] or ls.shape != samples.shape[:2]):
        raise ValueError(
            f"log_density_true must be (N,) = {ranks.shape[:1]} and log_density_samples (N, L) = "
            f"{samples.shape[:2]}; got {lt.shape} and {ls.shape}."
        )
    return SBCResult(
        ranks, samples.shape[1], np.asarray(theta_true, np.float64), samples, lt, ls, labels,
        spec, dict(info or {}), None if x is None else np.asarray(x),
    )  # fmt: skip


def _batched_samples(samples, spec, obs_dim: str):
    """``(N, L, d)`` draws from an array or a DataTree/Dataset with an ``obs_dim`` dim."""
    import xarray as xr

    if isinstance(samples, xr.DataTree):
        samples = samples["posterior"].to_dataset()
    if not isinstance(samples, xr.Dataset):
        return samples
    names = list(spec.names) if spec is not None else list(samples.data_vars)
    cols = []
    for name in names:
        da = samples[name]
        if obs_dim not in da.dims:
            raise ValueError(
                f"Variable {name!r} has dims {da.dims}; expected an {obs_dim!r} dim indexing "
                "the datasets (dims (chain, draw, observation, ...))."
            )
        da = da.transpose(obs_dim, "chain", "draw", ...)
        values = np.asarray(da.values, np.float64)
        cols.append(values.reshape(values.shape[0], values.shape[1] * values.shape[2], -1))
    return np.concatenate(cols, axis=-1)


def sbc_to_datatree(result: SBCResult):
    """PIT values as an ArviZ ``DataTree`` group ``prior_sbc`` (``chain=1, draw=N``).

    This is the layout ``arviz_plots.plot_ecdf_pit`` reads; variables carry the
    estimator's names and shapes (``spec``) or one column each (``labels``).
    """
    import arviz as az

    pit = result.pit
    if result.spec is not None:
        values = result.spec.unflatten(pit)
    else:
        values = {label: pit[:, j] for j, label in enumerate(result.labels)}
    data = {k: np.asarray(v)[None] for k, v in values.items()}
    return az.from_dict({"prior_sbc": data}, attrs={"prior_sbc": _jsonable(result.info)})


def _jsonable(info: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (info or {}).items() if isinstance(v, str | int | float | bool)}


# --------------------------------------------------------------- simulation
def _simulate_x(simulator, theta: np.ndarray, num_trials: int | None, seed: int) -> np.ndarray:
    if num_trials is None:
        return run_simulator(simulator, theta, seed=seed)
    rep = np.repeat(theta, int(num_trials), axis=0)
    x = run_simulator(simulator, rep, seed=seed)
    return x.reshape(theta.shape[0], int(num_trials), *x.shape[1:])


def run_sbc(
    estimator,
    prior,
    simulator: Callable,
    *,
    num_datasets: int = 200,
    num_posterior_samples: int = 1000,
    num_trials: int | None = None,
    seed: int = 0,
    chains: int = 4,
    num_warmup: int = 500,
    kernel: str = "nuts",
    progressbar: bool = False,
    **sampler_options: Any,
) -> SBCResult:
    r"""Simulation-based calibration of an NPE, NLE, MNLE or NRE estimator.

    Parameters
    ----------
    estimator
        A trained :class:`~pymc_sbi.Estimator` whose parameters are the free
        variables of ``prior`` (a flat model).
    prior
        The prior ``pm.Model`` (as used to simulate the training data).
    simulator
        ``(rng_key, theta) -> x`` in JAX, as for :func:`pymc_sbi.simulation`.
    num_datasets
        :math:`N`, number of :math:`(\theta^*, x^*)` pairs.
    num_posterior_samples
        :math:`L`, posterior draws per dataset; for MCMC rounded up to a
        multiple of ``chains`` (``chains * ceil(L / chains)`` draws).
    num_trials
        If given, each :math:`x^*_n` is ``num_trials`` i.i.d. simulations at
        :math:`\theta^*_n` and the likelihood/ratio is summed over them
        (NLE/MNLE/NRE only).
    seed
        Same seed, same result.
    chains, num_warmup, kernel, sampler_options
        MCMC settings for NLE/MNLE/NRE, passed to
        :func:`pymc_sbi.samplers.run_chains` (``num_samples = L / chains``).
    progressbar
        Progress bars of the sampler.

    Returns
    -------
    SBCResult
    """
    kind = getattr(estimator, "kind", None)
    if kind is None or not hasattr(estimator, "spec"):
        raise TypeError(f"estimator must be a pymc_sbi Estimator; got {type(estimator).__name__}.")
    estimator.spec.check_matches(param_spec(prior), "the prior model of run_sbc")
    n, L = int(num_datasets), int(num_posterior_samples)
    if n < 2 or L < 1:
        raise ValueError(f"num_datasets must be >= 2 and num_posterior_samples >= 1; got {n}, {L}.")
    if kind == "npe" and num_trials is not None:
        raise ValueError("num_trials needs a likelihood or ratio estimator; NPE takes one x.")
    seeds = np.random.SeedSequence(seed).generate_state(3)
    spec = estimator.spec
    t0 = time.perf_counter()
    if kind == "npe":
        theta_true = draw_prior(prior, n, seed=int(seeds[0]), names=list(spec.names))
        x = _simulate_x(simulator, theta_true, None, int(seeds[1]))
        t1 = time.perf_counter()
        samples, lp_s, info = posterior_draws(estimator, prior, x, L, seed=int(seeds[2]))
        lp_t = np.asarray(estimator.log_prob(x, theta_true), np.float64)
    else:
        chains = int(chains)
        per_chain = -(-L // chains)
        rng = np.random.default_rng(seeds[0])
        jm = jax_model(prior, var_names=list(spec.names))
        z_true = prior_positions(prior, n, seed=int(rng.integers(2**31)))
        theta_true = np.asarray(
            jax.vmap(lambda z: spec.flatten(jm.constrained_fn(z), xp=jnp))(jnp.asarray(z_true)),
            np.float64,
        )
        x = _simulate_x(simulator, theta_true, num_trials, int(seeds[1]))
        t1 = time.perf_counter()
        samples, lp_s, logpost_one, info = mcmc_posterior(
            estimator, jm, prior, x, int(seeds[2]), chains, int(num_warmup), per_chain,
            kernel, progressbar, sampler_options,
        )  # fmt: skip
        lp_t = np.asarray(jax.jit(jax.vmap(logpost_one))(jnp.asarray(z_true), jnp.asarray(x)))
        samples = np.asarray(samples, np.float64)
    t2 = time.perf_counter()
    info.update(method=kind, simulate_s=t1 - t0, inference_s=t2 - t1, num_trials=num_trials)
    return sbc_from_samples(
        theta_true, samples, log_density_true=lp_t, log_density_samples=lp_s, spec=spec, info=info,
        x=x,
    )  # fmt: skip
