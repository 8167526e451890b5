"""IMH proposals: Gaussian/Student-t densities, and an NPE estimator mapped to a model's z."""

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest
import scipy.stats as st
from mcse import assert_cov_within_mcse, assert_mean_within_mcse, assert_prob_within_mcse

import pymc_sbi as ps
from pymc_sbi.samplers import GaussianProposal, fit_gaussian, npe_proposal

CHOL = np.array([[1.0, 0.0], [0.8, 0.6]])
MEAN = np.array([0.5, -1.0])


@pytest.mark.parametrize("df", [None, 4.0])
def test_gaussian_and_student_log_prob(df, x64):
    q = GaussianProposal(jnp.asarray(MEAN), jnp.asarray(CHOL), df)
    z = np.random.default_rng(0).normal(size=(5, 2))
    cov = CHOL @ CHOL.T
    ref = (
        st.multivariate_normal(MEAN, cov).logpdf(z)
        if df is None
        else st.multivariate_t(MEAN, cov, df=df).logpdf(z)
    )
    np.testing.assert_allclose(q.log_prob(z), ref, rtol=1e-10)
    n = 20_000
    draws = np.asarray(q.sample(jax.random.key(1), n))
    assert_mean_within_mcse(draws, MEAN)
    # r2 = d' cov^-1 d / 2 is F(2, df) for the Student-t, chi2_2 / 2 for the normal (df
    # infinite): its quartiles are crossed by a quarter, half, three quarters of the draws.
    # A wrong scale, correlation or tail weight moves these frequencies.
    d = draws - MEAN
    r2 = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) / 2
    radius = st.chi2(2, scale=0.5) if df is None else st.f(2, df)
    quartiles = radius.ppf([0.25, 0.5, 0.75])
    assert_prob_within_mcse((r2[:, None] <= quartiles).sum(0), n, [0.25, 0.5, 0.75])
    if df is None:  # the t with df = 4 has no fourth moment: no CLT for its covariance
        assert_cov_within_mcse(draws, MEAN, cov)


def test_fit_gaussian_recovers_moments(x64):
    # 10,000 draws: 4 MCSE is 0.04 on the means, <= 0.06 on the covariance entries
    draws = np.random.default_rng(2).multivariate_normal(MEAN, CHOL @ CHOL.T, 10_000)
    q = fit_gaussian(draws.reshape(20, 500, 2), inflate=1.0)
    # the fit is the draws' sample mean and covariance (+ 1e-9 I) ...
    np.testing.assert_allclose(q.mean, draws.mean(0), rtol=1e-12)
    np.testing.assert_allclose(q.chol @ q.chol.T, np.cov(draws.T) + 1e-9 * np.eye(2), rtol=1e-10)
    # ... which are within Monte Carlo error of the exact ones
    assert_mean_within_mcse(draws, MEAN)
    assert_cov_within_mcse(draws, MEAN, CHOL @ CHOL.T)
    with pytest.raises(ValueError, match=r"\(n, dim\)"):
        fit_gaussian(np.zeros((2, 3)))


def prior():
    with pm.Model() as model:
        pm.Normal("mu", 0.0, 1.0)
        pm.HalfNormal("sigma", 1.0)
        pm.Uniform("p", 0.0, 1.0)
    return model


def simulator(rng_key, theta):
    noise = jax.random.normal(rng_key, (3,))
    return jnp.stack([theta[0], jnp.log(theta[1]), theta[2]]) + jnp.array([0.5, 0.3, 0.1]) * noise


@pytest.fixture(scope="module")
def npe_est():
    sims = ps.simulate(prior(), simulator, 1500, seed=0, progressbar=False)
    net = ps.nn.maf(hidden_features=16, num_transforms=2)
    return ps.fit(ps.npe(net), sims, ps.TrainConfig(max_epochs=5), seed=1, progressbar=False)


X_OBS = np.array([0.3, -0.2, 0.6])


def test_npe_proposal_change_of_variables(npe_est, x64):
    q = npe_proposal(npe_est, X_OBS, prior())
    z = jnp.asarray(np.random.default_rng(3).normal(size=(7, 3)))
    theta = jax.vmap(q.theta_of_z)(z)  # spec order: mu, sigma, p
    np.testing.assert_allclose(theta[:, 1], jnp.exp(z[:, 1]), rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(q.z_of_theta)(theta), z, atol=1e-10)
    p = theta[:, 2]
    log_jac = z[:, 1] + jnp.log(p * (1 - p))  # d sigma/dz = e^z, d p/dz = p (1 - p)
    lq = np.asarray(npe_est.log_prob(X_OBS, theta.astype(npe_est.dtype)), dtype=float)
    np.testing.assert_allclose(q.log_prob(z), lq + log_jac, rtol=1e-5, atol=1e-5)
    draws = np.asarray(q.sample(jax.random.key(0), 200))
    assert draws.shape == (200, 3)
    assert np.isfinite(draws).mean() > 0.5  # leaked draws (outside the support) are NaN


def test_imh_with_npe_proposal_on_the_model(npe_est, x64):
    model = prior()
    with model:  # exact likelihood of the same simulator: the IMH target
        pm.Normal("x0", model["mu"], 0.5, observed=X_OBS[0])
        pm.Normal("x1", pm.math.log(model["sigma"]), 0.3, observed=X_OBS[1])
        pm.Normal("x2", model["p"], 0.1, observed=X_OBS[2])
    q = npe_proposal(npe_est, X_OBS, model)
    dt = ps.sample(
        model, kernel="imh", init=q, draws=100, tune=0, chains=16, seed=0, progressbar=False
    )
    rate = float(dt.sample_stats["acceptance_rate"].mean())
    assert 0.05 < rate <= 1.0
    assert np.all((dt.posterior["p"].values > 0) & (dt.posterior["p"].values < 1))


def test_npe_proposal_errors(npe_est, lg_nle):
    with pm.Model() as other:
        pm.Normal("mu", 0.0, 1.0)
    with pytest.raises(ValueError, match="exactly the estimator's parameters"):
        npe_proposal(npe_est, X_OBS, other)
    with pytest.raises(TypeError, match="kind 'npe'"):
        npe_proposal(lg_nle, X_OBS, prior())
    with pytest.raises(ValueError, match="x_obs must have shape"):
        npe_proposal(npe_est, np.zeros(2), prior())
