"""Every kernel recovers a known posterior through ``ps.sample`` on a ``pm.Model``.

The model: a linear regression with known noise (conjugate: the posterior of the
two coefficients is a correlated Gaussian in closed form) plus an unrelated
``HalfNormal`` scale whose posterior is its prior (checks the log transform and
its Jacobian). Means and standard deviations must lie within 4 Monte Carlo
standard errors (ESS-based, tests/mcse.py) of the exact values.
"""

import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

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
    _, dt = run  # the kernel is in the test id
    moments, _ = exact_moments()
    post = dt.posterior
    for name, (mean, sd) in moments.items():
        draws = post[name].values  # (chains, draws, ...)
        assert_mean_within_mcse(draws, mean, chains=True)
        assert_sd_within_mcse(draws, sd, chains=True)
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


# Dual averaging tunes the step size towards the target acceptance during warm-up and then
# keeps its averaged iterate, whose acceptance differs from the target by an amount that is
# systematic, not Monte Carlo. Measured |mean acceptance - target| on this model (32 chains x
# 250 draws, seed 3): nuts 0.0003, rmh 0.007, mala 0.009, hmc 0.085 (0.735 against 0.65;
# its MCSE is 0.007, so 0.07 + 4 MCSE = 0.096 covers it). The old bound was 0.1 for all four.
ACCEPTANCE_ALLOWANCE = {"nuts": 0.03, "mala": 0.03, "rmh": 0.03, "hmc": 0.07}


def test_acceptance_near_target(run):
    kernel, dt = run
    targets = {"nuts": 0.8, "hmc": 0.65, "mala": 0.574, "rmh": 0.234}
    if kernel in targets:
        assert_mean_within_mcse(
            dt.sample_stats["acceptance_rate"].values,  # (chains, draws)
            targets[kernel],
            allowance=ACCEPTANCE_ALLOWANCE[kernel],
            chains=True,
        )
    if kernel == "imh":  # a near-exact proposal is accepted most of the time
        assert float(dt.sample_stats["acceptance_rate"].mean()) > 0.4
