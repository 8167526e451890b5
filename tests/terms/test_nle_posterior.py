"""NLE + NUTS recovers the posterior of the linear-Gaussian task.

Two separate claims, each with its own tolerance:

1. *Sampling is exact for the surrogate*: NUTS on the model with the neural term
   matches the surrogate posterior computed on a fine grid, within 4 Monte Carlo
   standard errors (from the effective sample size).
2. *The surrogate posterior is close to the analytic one*: a statement about the
   trained network (4,000 simulations), with an explicit allowance.
"""

import arviz as az
import numpy as np
import pymc as pm

import pymc_sbi as ps
from pymc_sbi.benchmarks.tasks import linear_gaussian_posterior

X_OBS = np.array([[0.6, 0.2], [0.9, 0.5], [0.3, -0.1]])


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
    draws = idata.posterior["theta"].values.reshape(-1, 2)
    ess = np.asarray(az.ess(idata, var_names=["theta"])["theta"].values)
    m_q, c_q = grid_posterior(lg_nle)

    # 1. sampler vs grid posterior of the same surrogate: pure Monte Carlo error
    sd_q = np.sqrt(np.diag(c_q))
    se_mean = sd_q / np.sqrt(ess)
    np.testing.assert_array_less(np.abs(draws.mean(0) - m_q), 4 * se_mean)
    c_hat = np.cov(draws.T)
    n_eff = ess.min()
    # SE of a covariance element from n_eff effectively independent Gaussian draws
    se_cov = np.sqrt((np.outer(sd_q, sd_q) ** 2 + c_q**2) / n_eff)
    np.testing.assert_array_less(np.abs(c_hat - c_q), 4 * se_cov)

    # 2. surrogate posterior vs analytic posterior: the network's error, stated explicitly
    m, c = linear_gaussian_posterior(X_OBS)
    sd = np.sqrt(np.diag(c))
    np.testing.assert_array_less(np.abs(m_q - m), 0.25 * sd)
    np.testing.assert_allclose(np.sqrt(np.diag(c_q)), sd, rtol=0.2)
    corr = lambda k: k[0, 1] / np.sqrt(k[0, 0] * k[1, 1])
    assert abs(corr(c_q) - corr(c)) < 0.15
