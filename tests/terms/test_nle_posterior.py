"""NLE + NUTS recovers the posterior of the linear-Gaussian task.

Two separate claims, each with its own tolerance:

1. *Sampling is exact for the surrogate*: NUTS on the model with the neural term
   matches the surrogate posterior computed on a fine grid, within 4 Monte Carlo
   standard errors (from the effective sample size; tests/mcse.py).
2. *The surrogate posterior is close to the analytic one*: a statement about the
   trained network (4,000 simulations), with an explicit allowance.
"""

import numpy as np
import pymc as pm
from mcse import assert_cov_within_mcse, assert_mean_within_mcse

import pymc_sbi as ps
from pymc_sbi.benchmarks.tasks import linear_gaussian_posterior

X_OBS = np.array([[0.6, 0.2], [0.9, 0.5], [0.3, -0.1]])
# Claim 2's allowances: the fixture's NLE (seeds 0 and 1) is off by 0.05 and 0.10 posterior
# sd in the mean, 6 % and 2 % in the sds, 0.03 in the correlation (0.57). Over 6
# (simulation, training) seeds the mean error reached 0.30 sd (tests/terms/test_likelihood.py
# allows 0.35); this test runs the fixture only.
NLE_GRID_MEAN_ALLOWANCE = 0.25  # posterior-mean error, in posterior sds
NLE_GRID_SD_ALLOWANCE = 0.2  # relative error of the posterior sds (measured 0.94-1.10)
NLE_GRID_CORR_ALLOWANCE = 0.15  # absolute error of the posterior correlation


def grid_posterior(estimator, n=241, half_width=2.0):
    """Mean and covariance of prior x surrogate likelihood on a grid around the analytic mean."""
    mean, cov = linear_gaussian_posterior(X_OBS)
    sd = np.sqrt(np.diag(cov))
    axes = [np.linspace(m - 6 * s, m + 6 * s, n) for m, s in zip(mean, sd, strict=True)]
    g0, g1 = np.meshgrid(*axes, indexing="ij")
    theta = np.stack([g0.ravel(), g1.ravel()], -1)
    loglik = np.asarray(estimator.log_prob(X_OBS[:, None, :], theta[None]), np.float64).sum(0)
    logpost = loglik - 0.5 * (theta**2).sum(-1)
    w = np.exp(logpost - logpost.max())
    w /= w.sum()
    m = w @ theta
    c = (theta - m).T @ ((theta - m) * w[:, None])
    return m, c


def test_nle_nuts_posterior_moments(lg_nle):
    with pm.Model() as model:
        theta = pm.Normal("theta", 0, 1, shape=2)
        ps.NeuralLikelihood("x", lg_nle, params={"theta": theta}, observed=X_OBS)
        idata = pm.sample(
            1000,
            tune=500,
            chains=4,
            random_seed=11,
            progressbar=False,
            nuts_sampler="numpyro",
            nuts={"chain_method": "vectorized"},
        )
    del model
    draws = idata.posterior["theta"].values  # (chains, draws, 2)
    m_q, c_q = grid_posterior(lg_nle)

    # 1. sampler vs grid posterior of the same surrogate: pure Monte Carlo error
    assert_mean_within_mcse(draws, m_q, chains=True)
    assert_cov_within_mcse(draws, m_q, c_q, chains=True)

    # 2. surrogate posterior vs analytic posterior: the network's error, stated explicitly
    m, c = linear_gaussian_posterior(X_OBS)
    sd = np.sqrt(np.diag(c))
    np.testing.assert_array_less(np.abs(m_q - m), NLE_GRID_MEAN_ALLOWANCE * sd)
    np.testing.assert_allclose(np.sqrt(np.diag(c_q)), sd, rtol=NLE_GRID_SD_ALLOWANCE)
    corr = lambda k: k[0, 1] / np.sqrt(k[0, 0] * k[1, 1])
    assert abs(corr(c_q) - corr(c)) < NLE_GRID_CORR_ALLOWANCE
