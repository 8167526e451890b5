r"""Surrogate-versus-simulator posterior predictive checks.

Before trusting a neural likelihood, compare it with the simulator it
replaces *where the posterior puts its mass*: draw :math:`\theta^{(s)}` from
the posterior, generate a replicate data set of the same layout as the
observations (same trials, same covariates) twice -- once with the real
simulator, once with the surrogate -- and compare summary statistics
:math:`T(x)` across draws. If the surrogate is faithful, the two
distributions of :math:`T` agree; a shift of more than a fraction of their
spread (``standardized_difference`` below) flags a statistic the surrogate
gets wrong. The observed :math:`T(x_{\text{obs}})` is reported too, which
makes this an ordinary posterior predictive check at the same time.

The parameters each trial received are read from the model itself (the
``theta`` graph the neural term was built from, e.g. ``mu[subject_idx]``),
so grouped and ragged hierarchical models need no extra bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np

from pymc_sbi.simulation import run_simulator
from pymc_sbi.terms.core import term_info
from pymc_sbi.terms.draws import term_draws
from pymc_sbi.terms.range_check import constant_value

__all__ = ["PredictiveCheck", "default_statistics", "predictive_check"]


def default_statistics(x: np.ndarray, estimator) -> dict[str, np.ndarray]:
    r"""Summary statistics per replicate: ``x`` ``(S, *trials, *x_shape)`` → ``{name: (S,)}``.

    For every data column: mean, standard deviation and the 10/50/90% quantiles
    over trials. For mixed (MNLE) data, the category column instead gives the
    proportion of each category :math:`k \ge 1`, and the continuous columns
    also get their mean within each category.
    """
    s = x.shape[0]
    flat = x.reshape(s, -1, estimator.x_dim)
    stats: dict[str, np.ndarray] = {}
    n_cont = estimator.x_dim - (1 if estimator.kind == "mnle" else 0)
    for j in range(n_cont):
        col = flat[..., j]
        stats[f"mean(x[{j}])"] = col.mean(1)
        stats[f"sd(x[{j}])"] = col.std(1)
        for q in (10, 50, 90):
            stats[f"q{q}(x[{j}])"] = np.percentile(col, q, axis=1)
    if estimator.kind == "mnle":
        k = flat[..., -1]
        n_cat = int(getattr(estimator.module, "num_categories", 2))
        for c in range(1, n_cat):
            stats[f"P(x[{estimator.x_dim - 1}]={c})"] = (k == c).mean(1)
        for c in range(n_cat):
            mask = k == c
            for j in range(n_cont):
                tot = np.where(mask, flat[..., j], 0.0).sum(1)
                cnt = mask.sum(1)
                stats[f"mean(x[{j}] | k={c})"] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return stats


@dataclass(frozen=True)
class PredictiveCheck:
    """Replicates and statistics of a surrogate-vs-simulator predictive check.

    Attributes
    ----------
    names
        Names of the statistics.
    simulator, surrogate
        ``(S, n_stats)`` statistics of the simulator and surrogate replicates.
    observed
        ``(n_stats,)`` statistics of the observations (``None`` without them).
    x_simulator, x_surrogate
        ``(S, *trials, *x_shape)`` the replicate data sets.
    """

    names: tuple[str, ...]
    simulator: np.ndarray
    surrogate: np.ndarray
    observed: np.ndarray | None
    x_simulator: np.ndarray
    x_surrogate: np.ndarray

    @property
    def standardized_difference(self) -> np.ndarray:
        r"""Standardised difference of the means, per statistic.

        :math:`(\bar T_{\text{surr}} - \bar T_{\text{sim}}) / \mathrm{sd}(T_{\text{sim}})`.
        """
        sd = np.nanstd(self.simulator, 0)
        return (np.nanmean(self.surrogate, 0) - np.nanmean(self.simulator, 0)) / np.where(
            sd > 0, sd, np.nan
        )

    def summary(self):
        """A ``pandas.DataFrame``: one row per statistic."""
        import pandas as pd

        data = {
            "simulator_mean": np.nanmean(self.simulator, 0),
            "simulator_sd": np.nanstd(self.simulator, 0),
            "surrogate_mean": np.nanmean(self.surrogate, 0),
            "surrogate_sd": np.nanstd(self.surrogate, 0),
            "std_diff": self.standardized_difference,
        }
        if self.observed is not None:
            data = {"observed": self.observed, **data}
        return pd.DataFrame(data, index=list(self.names))

    def plot(self, axes=None, max_panels: int = 12):
        """Histograms of each statistic over posterior draws: simulator vs surrogate.

        The observed value is a vertical line. Returns the matplotlib axes.
        """
        import matplotlib.pyplot as plt

        k = min(len(self.names), max_panels)
        if axes is None:
            ncol = min(4, k)
            nrow = -(-k // ncol)
            _, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        axes = np.ravel(axes)
        for i in range(k):
            ax = axes[i]
            a, b = self.simulator[:, i], self.surrogate[:, i]
            both = np.concatenate([a, b])
            both = both[np.isfinite(both)]
            bins = np.linspace(both.min(), both.max(), 25) if both.size and np.ptp(both) > 0 else 10
            ax.hist(a[np.isfinite(a)], bins=bins, alpha=0.5, density=True, label="simulator")
            ax.hist(b[np.isfinite(b)], bins=bins, alpha=0.5, density=True, label="surrogate")
            if self.observed is not None and np.isfinite(self.observed[i]):
                ax.axvline(self.observed[i], color="k", lw=1.5, label="observed")
            ax.set_title(self.names[i], fontsize=9)
            ax.set_yticks([])
        for ax in axes[k:]:
            ax.set_visible(False)
        axes[0].legend(fontsize=7)
        return axes


def predictive_check(
    model,
    idata,
    name: str,
    simulator: Callable,
    *,
    num_draws: int = 100,
    seed: int = 0,
    statistics: Callable | None = None,
    backend: str = "jax",
) -> PredictiveCheck:
    """Simulate replicates with the real simulator and with the surrogate at posterior draws.

    Parameters
    ----------
    model
        The ``pm.Model`` holding the neural term ``name``.
    idata
        Posterior samples of ``model`` (``pm.sample``'s result).
    name
        The neural likelihood term (an NLE/MNLE :func:`~pymc_sbi.NeuralLikelihood`).
    simulator
        The real simulator of one trial, as given to :func:`pymc_sbi.simulation`:
        ``simulator(rng_key, theta)`` or, with covariates,
        ``simulator(rng_key, theta, s)`` (``backend="numpy"``: over a batch).
    num_draws
        Posterior draws (evenly thinned); one replicate data set per draw.
    seed
        Seed of both replicates.
    statistics
        ``(x, estimator) -> {name: (S,)}`` on replicates ``(S, *trials, *x_shape)``;
        default :func:`default_statistics`.
    backend
        ``"jax"`` or ``"numpy"``, as in :func:`pymc_sbi.simulation`.

    Returns
    -------
    PredictiveCheck
        Use ``.summary()`` for a table and ``.plot()`` for a figure.
    """
    info = term_info(model, name)
    est = info.estimator
    if est.role != "likelihood":
        raise ValueError(f"predictive_check needs a likelihood term (nle/mnle), got {est.kind!r}.")
    observed = constant_value(info.observed)
    theta, cov, _ = term_draws(model, idata, name, max_draws=num_draws)
    if observed is None:
        raise ValueError(f"Term {name!r} has no constant observations to take the layout from.")
    k = len(est.x_shape)
    batch = (theta.shape[0], *observed.shape[: observed.ndim - k])
    theta = np.broadcast_to(theta, (*batch, est.spec.dim))
    if cov is not None:
        cov = np.broadcast_to(cov, (*batch, cov.shape[-1]))
    seeds = np.random.SeedSequence(seed).generate_state(2)
    x_sur = est.sample(
        jax.random.key(int(seeds[0])),
        theta.astype(np.float32),
        covariates=None if cov is None else cov.astype(np.float32),
    )
    x_sur = np.asarray(x_sur, dtype=np.float64)
    x_sim = run_simulator(
        simulator,
        theta.reshape(-1, est.spec.dim),
        seed=int(seeds[1]),
        backend=backend,
        covariates=None if cov is None else cov.reshape(-1, cov.shape[-1]),
    )
    x_sim = np.asarray(x_sim, dtype=np.float64).reshape(*batch, *est.x_shape)
    stat_fn = statistics or default_statistics
    s_sim, s_sur = stat_fn(x_sim, est), stat_fn(x_sur, est)
    names = tuple(s_sim)
    obs_stats = stat_fn(np.asarray(observed, float)[None], est)
    return PredictiveCheck(
        names=names,
        simulator=np.stack([s_sim[n] for n in names], -1),
        surrogate=np.stack([s_sur[n] for n in names], -1),
        observed=np.array([obs_stats[n][0] for n in names]),
        x_simulator=x_sim,
        x_surrogate=x_sur,
    )
