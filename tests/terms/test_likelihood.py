"""The NeuralLikelihood term inside pm.Model: gradients, every sampler, predictive draws."""

import os
import time
import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps
from pymc_sbi.benchmarks.tasks import LG_LIKELIHOOD_COV, linear_gaussian_posterior

X_OBS = np.array([[0.6, 0.2], [0.9, 0.5], [0.3, -0.1]])
COORDS = {"param": ["a", "b"], "trial": [0, 1, 2], "obs_dim": ["u", "v"]}


def make_model(estimator, observed=X_OBS):
    with pm.Model(coords=COORDS) as model:
        theta = pm.Normal("theta", 0, 1, dims="param")
        ps.NeuralLikelihood(
            "x", estimator, params={"theta": theta}, observed=observed, dims=("trial", "obs_dim")
        )
    return model


def check_posterior(idata, tol_sd=0.35):
    """Posterior mean near the analytic one: 4 MCSE plus a surrogate allowance.

    The surrogate allowance (``tol_sd`` posterior sds) covers the error of a
    4,000-simulation NLE, which is systematic, not Monte Carlo.
    """
    mean, cov = linear_gaussian_posterior(X_OBS)
    post = idata.posterior["theta"]
    assert post.dims == ("chain", "draw", "param")
    est = post.mean(("chain", "draw")).values
    mcse = az.mcse(idata, var_names=["theta"])["theta"].values
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(est - mean), 4 * mcse + tol_sd * sd)


def test_logp_is_sum_of_trial_log_probs(lg_nle):
    model = make_model(lg_nle)
    point = {"theta": np.array([0.3, 0.1])}
    logp = model.compile_logp(vars=[model["x"]], sum=False)(point)[0]
    expected = np.asarray(lg_nle.log_prob(X_OBS, point["theta"]), dtype=np.float64)
    assert logp.shape == (3,)  # pointwise, one per trial
    np.testing.assert_allclose(logp, expected, rtol=1e-5)


def test_gradient_matches_finite_differences(lg_nle, x64):
    est = lg_nle.astype(jnp.float64)
    model = make_model(est)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    point = {"theta": np.array([0.3, -0.2])}
    grad = dlogp(point)
    h = 1e-6
    fd = np.array(
        [
            (logp({"theta": point["theta"] + h * e}) - logp({"theta": point["theta"] - h * e}))
            / (2 * h)
            for e in np.eye(2)
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)
    # the gradient is the network's, not only the prior's
    assert np.abs(grad + point["theta"]).max() > 0.1


def test_interface_dtype_is_float64_for_float32_network(lg_nle):
    model = make_model(lg_nle)
    assert lg_nle.dtype == jnp.float32
    assert model.logp().dtype == "float64"
    assert model.compile_dlogp()({"theta": np.zeros(2)}).dtype == np.float64


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(nuts_sampler="pymc", cores=1), id="pymc-nuts"),
        pytest.param(
            dict(nuts_sampler="numpyro", nuts={"chain_method": "vectorized"}), id="numpyro"
        ),
        pytest.param(dict(nuts_sampler="nutpie"), id="nutpie-numba"),
        pytest.param(
            dict(nuts_sampler="nutpie", compile_kwargs={"mode": "JAX", "gradient_backend": "jax"}),
            id="nutpie-jax",
        ),
        pytest.param(dict(), id="default"),
    ],
)
def test_nuts_backends(lg_nle, kwargs):
    with make_model(lg_nle):
        idata = pm.sample(
            300,
            tune=300,
            chains=2,
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
            **kwargs,
        )
    check_posterior(idata)


def test_slice(lg_nle):
    with make_model(lg_nle):
        idata = pm.sample(
            600,
            tune=300,
            chains=2,
            cores=1,
            step=pm.Slice(),
            random_seed=2,
            progressbar=False,
            compute_convergence_checks=False,
        )
    check_posterior(idata)


def test_smc(lg_nle):
    with make_model(lg_nle):
        idata = pm.sample_smc(
            draws=500,
            chains=1,
            cores=1,
            random_seed=3,
            progressbar=False,
            compute_convergence_checks=False,
        )
    check_posterior(idata, tol_sd=0.5)


@pytest.mark.parametrize("method", ["advi", "fullrank_advi"])
def test_pymc_advi(lg_nle, method):
    """pm.fit through the neural term: the mean for both; the posterior correlation
    (0.57, exact) only for full rank -- mean-field ADVI has none by construction."""
    mean, cov = linear_gaussian_posterior(X_OBS)
    with make_model(lg_nle):
        approx = pm.fit(
            3000,
            method=method,
            random_seed=4,
            progressbar=False,
            obj_optimizer=pm.adam(learning_rate=0.02),
        )
    draws = approx.sample(4000, random_seed=5).posterior["theta"].values.reshape(-1, 2)
    sd = np.sqrt(np.diag(cov))
    # a Gaussian family gets a Gaussian posterior's mean right (surrogate allowance 0.4 sd)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.4 * sd.max())
    corr = np.corrcoef(draws.T)[0, 1]
    if method == "fullrank_advi":
        exact = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
        assert abs(corr - exact) < 0.2  # sampling error of 4,000 draws is 0.01
        np.testing.assert_allclose(draws.std(0), sd, rtol=0.3)
    else:
        assert abs(corr) < 0.1


def test_fit_vi_through_neural_term(lg_nle):
    """ps.fit_vi (full-rank Gaussian, reverse KL) on a model with a NeuralLikelihood term."""
    from pymc_sbi.vi import fit_vi

    mean, cov = linear_gaussian_posterior(X_OBS)
    post = fit_vi(
        make_model(lg_nle),
        ps.vi.VIConfig(
            family="gaussian",
            num_particles=16,
            learning_rate=2e-2,
            max_iters=500,
            check_convergence=False,
        ),
        seed=0,
        progressbar=False,
    )
    draws = post.sample(4000, seed=1).posterior["theta"].values.reshape(-1, 2)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.4 * sd.max())
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.3)
    exact = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert abs(np.corrcoef(draws.T)[0, 1] - exact) < 0.2
    diag = post.evaluate(seed=2)
    assert diag.khat < 0.7  # a Gaussian family fits the (near-Gaussian) surrogate posterior


def test_prior_and_posterior_predictive_draw_from_surrogate(lg_nle):
    model = make_model(lg_nle)
    with model:
        prior = pm.sample_prior_predictive(2000, random_seed=6)
        idata = pm.sample(
            500,
            tune=300,
            chains=2,
            random_seed=7,
            progressbar=False,
            nuts_sampler="numpyro",
            compute_convergence_checks=False,
        )
        pp = pm.sample_posterior_predictive(idata, random_seed=8, progressbar=False)
    x_prior = prior.prior_predictive["x"]
    assert x_prior.dims == ("chain", "draw", "trial", "obs_dim")
    # prior predictive of x = theta + noise: mean 0, variance 1 + 0.25 per coordinate
    v = x_prior.values.reshape(-1, 2)
    se_var = 1.25 * np.sqrt(2 / v.shape[0])
    np.testing.assert_allclose(v.var(0), 1.25, atol=5 * se_var + 0.1)
    x_pp = pp.posterior_predictive["x"]
    assert x_pp.dims == ("chain", "draw", "trial", "obs_dim")
    # posterior predictive mean of each trial is the posterior mean of theta
    mean, cov = linear_gaussian_posterior(X_OBS)
    got = x_pp.values.reshape(-1, 2)
    total_sd = np.sqrt(np.diag(cov) + np.diag(LG_LIKELIHOOD_COV))
    np.testing.assert_allclose(got.mean(0), mean, atol=0.35 * total_sd.max())
    np.testing.assert_allclose(got.std(0), total_sd, rtol=0.2)


def test_wrong_inputs_give_clear_errors(lg_nle):
    with pm.Model(), pytest.raises(ValueError, match=r"missing \['theta'\]"):
        ps.NeuralLikelihood("x", lg_nle, params={"mu": pm.Normal("mu")}, observed=X_OBS)
    with pm.Model(), pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        t = pm.Normal("t", shape=2)
        ps.NeuralLikelihood("x", lg_nle, params={"theta": t, "extra": t}, observed=X_OBS)
    with pm.Model(), pytest.raises(ValueError, match=r"'theta'.*shape \(2,\)"):
        ps.NeuralLikelihood("x", lg_nle, params={"theta": pm.Normal("t", shape=3)}, observed=X_OBS)
    with pm.Model(), pytest.raises(ValueError, match=r"observed has shape \(3, 3\).*\(2,\)"):
        ps.NeuralLikelihood(
            "x", lg_nle, params={"theta": pm.Normal("t", shape=2)}, observed=np.zeros((3, 3))
        )


def test_forked_child_raises_instead_of_deadlocking(lg_nle):
    """JAX deadlocks after fork(); our Op must raise a RuntimeError that says what to do."""
    logp = make_model(lg_nle).compile_logp()
    point = {"theta": np.zeros(2)}
    logp(point)  # JAX initialised in the parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "os.fork() was called ... JAX is multithreaded"
        pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            logp(point)
        except RuntimeError as err:
            code = 0 if "mp_ctx='forkserver'" in str(err) else 2
        except BaseException:
            code = 4
        os._exit(code)
    deadline = time.time() + 60
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the forked child hung")
