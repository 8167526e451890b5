"""Exact (and deliberately distorted) linear-Gaussian posteriors for the diagnostics tests."""

import numpy as np
from scipy import stats

from pymc_sbi.benchmarks.tasks import LG_LIKELIHOOD_COV, linear_gaussian_posterior


def analytic_sbc_draws(n, num_samples, seed, *, scale=1.0, shift=0.0):
    """``theta* ~ N(0, I)``, ``x ~ N(theta*, Sigma)`` and draws of a (distorted) exact posterior.

    The draws come from N(mean + shift * sd, scale^2 * cov): ``scale=1, shift=0`` is the
    exact posterior, ``scale < 1`` an over-confident one. Returns theta*, x, draws
    ``(n, L, 2)``, and the log density of the *sampled* distribution at theta* and at
    the draws (what an estimator would report about itself).
    """
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, 2))
    x = theta + rng.standard_normal((n, 2)) @ np.linalg.cholesky(LG_LIKELIHOOD_COV).T
    draws = np.empty((n, num_samples, 2))
    lp_draws = np.empty((n, num_samples))
    lp_true = np.empty(n)
    for i in range(n):
        mean, cov = linear_gaussian_posterior(x[i])
        mean = mean + shift * np.sqrt(np.diag(cov))
        cov = scale**2 * cov
        dist = stats.multivariate_normal(mean, cov)
        draws[i] = mean + rng.standard_normal((num_samples, 2)) @ np.linalg.cholesky(cov).T
        lp_draws[i] = dist.logpdf(draws[i])
        lp_true[i] = dist.logpdf(theta[i])
    return theta, x, draws, lp_true, lp_draws
