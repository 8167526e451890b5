"""Every kernel recovers a known posterior through ``ps.sample`` on a ``pm.Model``.

The model: a linear regression with known noise (conjugate: the posterior of the
two coefficients is a correlated Gaussian in closed form) plus an unrelated
``HalfNormal`` scale whose posterior is its prior (checks the log transform and
its Jacobian). Means and standard deviations must lie within 5 Monte Carlo
standard errors (ArviZ's ESS-based MCSE) of the exact values.
"""

import arviz as az
import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps

RNG = np.random.default_rng(1)
X = np.linspace(0.0, 3.0, 20)
Y = 1.0 + 0.5 * X + RNG.normal(size=20)
PRIOR_SD, SIGMA_SCALE = 10.0, 1.5


def make_model():
    with pm.Model(coords={"coef": ["a", "b"], "obs": np.arange(20)}) as model:
        beta = pm.Normal("beta", 0.0, PRIOR_SD, dims="coef")
        sigma = pm.HalfNormal("sigma", SIGMA_SCALE)
        pm.Deterministic("sigma2", sigma**2)
        pm.Normal("y", beta[0] + beta[1] * X, 1.0, observed=Y, dims="obs")
    return model


def exact_moments():
    design = np.stack([np.ones_like(X), X], axis=1)
    cov = np.linalg.inv(design.T @ design + np.eye(2) / PRIOR_SD**2)
    mean = cov @ design.T @ Y
    s_mean = SIGMA_SCALE * np.sqrt(2 / np.pi)
    s_sd = SIGMA_SCALE * np.sqrt(1 - 2 / np.pi)
    return {"beta": (mean, np.sqrt(np.diag(cov))), "sigma": (s_mean, s_sd)}, cov


def imh_proposal(model):
    """Exact for the coefficients, a Student-t fit to log|N(0, 1.5^2)| for log sigma."""
    _, cov = exact_moments()
    rng = np.random.default_rng(0)
    beta = rng.multivariate_normal(exact_moments()[0]["beta"][0], cov, 20_000)
    log_sigma = np.log(np.abs(rng.normal(0, SIGMA_SCALE, 20_000)))
    return ps.samplers.fit_gaussian(np.column_stack([beta, log_sigma]), inflate=1.3, df=10)


KERNEL_ARGS = {
    "nuts": {},
    "hmc": {},
    "mala": {},
    "rmh": {},
    "slice": {},
    "imh": {"proposal": "fit"},
}


@pytest.fixture(scope="module", params=sorted(KERNEL_ARGS))
def run(request):
    kernel = request.param
    model = make_model()
    kwargs = dict(KERNEL_ARGS[kernel])
    if kwargs.get("proposal") == "fit":
        kwargs["proposal"] = imh_proposal(model)
    dt = ps.sample(
        model,
        kernel=kernel,
        draws=250,
        tune=300,
        chains=32,
        seed=3,
        progressbar=False,
        **kwargs,
    )
    return kernel, dt


def test_moments_within_mcse(run):
    kernel, dt = run
    moments, _ = exact_moments()
    mcse_mean = az.mcse(dt, method="mean")
    mcse_sd = az.mcse(dt, method="sd")
    post = dt.posterior
    for name, (mean, sd) in moments.items():
        draws = post[name].values.reshape(-1, *np.shape(mean))
        err_mean = np.abs(draws.mean(axis=0) - mean)
        err_sd = np.abs(draws.std(axis=0) - sd)
        assert np.all(err_mean < 5 * mcse_mean[name].values), (kernel, name, err_mean)
        assert np.all(err_sd < 5 * mcse_sd[name].values), (kernel, name, err_sd)
    # the deterministic is computed from the same draws
    np.testing.assert_allclose(post["sigma2"].values, post["sigma"].values ** 2)


def test_datatree_layout(run):
    kernel, dt = run
    post = dt.posterior
    assert set(post.data_vars) == {"beta", "sigma", "sigma2"}
    assert post["beta"].dims == ("chain", "draw", "coef")
    assert list(post["coef"].values) == ["a", "b"]
    assert post.sizes["chain"] == 32 and post.sizes["draw"] == 250
    np.testing.assert_allclose(dt.observed_data["y"].values, Y)
    stats = dt.sample_stats
    expected = {
        "nuts": {
            "lp",
            "acceptance_rate",
            "diverging",
            "step_size",
            "tree_depth",
            "n_steps",
            "energy",
        },
        "hmc": {"lp", "acceptance_rate", "diverging", "step_size", "n_steps", "energy"},
        "mala": {"lp", "acceptance_rate", "step_size"},
        "rmh": {"lp", "acceptance_rate", "step_size"},
        "slice": {"lp", "step_size", "n_steps"},
        "imh": {"lp", "acceptance_rate"},
    }[kernel]
    assert set(stats.data_vars) == expected
    for v in expected:
        assert stats[v].dims == ("chain", "draw")
    assert dt.posterior.attrs["kernel"] == kernel
    # lp is the model's log-density (Jacobian included) at the stored draw
    model = make_model()
    logp = model.compile_logp()
    point = {
        "beta": post["beta"].values[0, -1],
        "sigma_log__": np.log(post["sigma"].values[0, -1]),
    }
    np.testing.assert_allclose(stats["lp"].values[0, -1], logp(point), rtol=1e-8)


def test_acceptance_near_target(run):
    kernel, dt = run
    targets = {"nuts": 0.8, "hmc": 0.65, "mala": 0.574, "rmh": 0.234}
    if kernel in targets:
        rate = float(dt.sample_stats["acceptance_rate"].mean())
        assert abs(rate - targets[kernel]) < 0.1, rate
    if kernel == "imh":  # a near-exact proposal is accepted most of the time
        assert float(dt.sample_stats["acceptance_rate"].mean()) > 0.4
