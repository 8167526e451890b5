"""Starting points of ``ps.sample``: ``init="resample"`` (sampling-importance-resampling)."""

import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

import pymc_sbi as ps
from pymc_sbi.terms.jaxmodel import jax_model, prior_logdensity_fn

Y = np.array([[0.5, -1.0], [1.5, 0.2], [1.0, -0.5]])
N_CHAINS = 4000


def make_model():
    with pm.Model() as model:
        theta = pm.Normal("theta", 0.0, 1.0, shape=2)
        pm.HalfNormal("sigma", 1.0)
        pm.Normal("y", theta, 1.0, observed=Y)
    return model


def test_prior_part_is_the_prior_density():
    """log pi(z) - log p0(z) is the Gaussian log-likelihood and does not depend on sigma."""
    jm = jax_model(make_model())
    log_prior = prior_logdensity_fn(jm)
    z = np.array([0.3, -0.2, 0.7])  # theta, log sigma
    log_lik = float(jm.logdensity_fn(z) - log_prior(z))
    expected = -0.5 * np.sum((Y - z[:2]) ** 2) - Y.size / 2 * np.log(2 * np.pi)
    np.testing.assert_allclose(log_lik, expected, rtol=1e-10)
    z2 = z.copy()
    z2[2] = -1.5
    np.testing.assert_allclose(float(jm.logdensity_fn(z2) - log_prior(z2)), expected, rtol=1e-10)


def test_resample_init_draws_from_the_posterior():
    """Prior draws resampled by the likelihood follow the posterior N(sum(y) / 4, I / 4).

    sigma does not enter the likelihood, so its resampled draws keep the
    HalfNormal(1) prior (a wrong prior part or a missing Jacobian would tilt
    them). With 100,000 candidates the weights' effective sample size is
    100,000 / E_prior[w^2] = 100,000 / 3.35 (per dimension
    E[w^2] = exp(m^2 / (2 - s^2)) / (s sqrt(2 - s^2)), s^2 = 1/4) = 30,000 >> 4,000
    chains, so the starting points are close to i.i.d. posterior draws: means and
    sds within 4 Monte Carlo standard errors of 4,000 i.i.d. draws (mcse.py).
    """
    jm = jax_model(make_model())
    assert jm.value_names == ("theta", "sigma_log__")
    z = ps.samplers.resample_positions(jm, N_CHAINS, seed=0, num_candidates=100_000)
    assert z.shape == (N_CHAINS, 3)
    theta, sigma = z[:, :2], np.exp(z[:, 2])
    assert_mean_within_mcse(theta, Y.sum(0) / 4)
    assert_sd_within_mcse(theta, 0.5)
    # HalfNormal(1): mean sqrt(2 / pi), sd sqrt(1 - 2 / pi)
    assert_mean_within_mcse(sigma, np.sqrt(2 / np.pi))
    assert_sd_within_mcse(sigma, np.sqrt(1 - 2 / np.pi))
    again = ps.samplers.resample_positions(jm, N_CHAINS, seed=0, num_candidates=100_000)
    np.testing.assert_array_equal(z, again)


def test_resample_init_through_sample_and_bad_init():
    model = make_model()
    dt = ps.sample(
        model, kernel="rmh", init="resample", chains=64, draws=5, tune=0, seed=1, progressbar=False
    )
    assert dt.posterior["theta"].shape == (64, 5, 2)
    # every chain starts near the posterior mean (prior draws would scatter over N(0, 1))
    first = dt.posterior["theta"].values[:, 0]
    assert np.all(np.abs(first - Y.sum(0) / 4) < 5 * 0.5)
    with pytest.raises(ValueError, match="'prior', 'resample'"):
        ps.sample(model, init="posterior", chains=2, draws=2, tune=0, progressbar=False)
