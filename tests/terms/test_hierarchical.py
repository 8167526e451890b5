"""Hierarchical neural likelihood terms: layouts, ragged groups, covariates, gradients, NUTS."""

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor
import pytest
import xarray as xr
from mcse import assert_prob_within_mcse
from race_helpers import race_mnle
from scipy.stats import norm

import pymc_sbi as ps
from pymc_sbi.benchmarks import race
from pymc_sbi.terms.ops import ForkSafeJAXOp

J, T = 4, 12
DATA = race.hierarchical_data(J, T, seed=2)
RAGGED = race.hierarchical_data(J, T, seed=3, ragged=True)


def hierarchical_model(est, data, layout="flat", exact=False):
    idx = data["subject"]
    with pm.Model(coords={"subject": np.arange(J)}) as model:
        mu_v = pm.Normal("mu_v", 1.0, 0.5)
        mu_b = pm.Normal("mu_b", -0.5, 0.5)
        sigma = pm.Uniform("sigma", 0.3, 1.2)
        v = pm.Normal("v", mu_v, 0.3, dims="subject")
        b = pm.Normal("b", mu_b, 0.3, dims="subject")
        if exact:
            x = data["x"]
            ll = race.exact_log_likelihood(x[:, 0], x[:, 1], v[idx], b[idx], sigma, data["s"])
            pm.Potential("ll", ll.sum())
        elif layout == "flat":
            params = {"v": v[idx], "b": b[idx], "sigma": sigma}
            ps.NeuralLikelihood("x", est, params, observed=data["x"], covariates=data["s"])
        else:
            n = len(idx) // J
            ps.NeuralLikelihood(
                "x",
                est,
                {"v": v, "b": b, "sigma": sigma},
                observed=data["x"].reshape(J, n, 2),
                covariates=data["s"].reshape(J, n),
            )
    return model


POINT = {
    "mu_v": 0.9,
    "mu_b": -0.4,
    "sigma_interval__": 0.1,
    "v": np.array([0.8, 1.1, 1.3, 0.6]),
    "b": np.array([-0.5, -0.3, -0.6, -0.2]),
}


def manual_logp(est, data, point):
    idx = data["subject"]
    sigma = 0.3 + 0.9 / (1 + np.exp(-point["sigma_interval__"]))
    theta = np.c_[point["v"][idx], point["b"][idx], np.full(idx.size, sigma)]
    return np.asarray(est.log_prob(data["x"], theta, data["s"][:, None]), np.float64)


@pytest.mark.parametrize("layout", ["flat", "grouped"])
def test_logp_equals_sum_of_per_trial_log_probs(layout):
    est = race_mnle()
    model = hierarchical_model(est, DATA, layout)
    pointwise = model.compile_logp(vars=[model["x"]], sum=False)(POINT)[0]
    expected = manual_logp(est, DATA, POINT)
    assert pointwise.shape == ((J * T,) if layout == "flat" else (J, T))
    np.testing.assert_allclose(pointwise.ravel(), expected, rtol=1e-5, atol=1e-5)


def test_ragged_groups():
    est = race_mnle()
    counts = np.bincount(RAGGED["subject"])
    assert len(set(counts)) > 1  # really ragged
    model = hierarchical_model(est, RAGGED, "flat")
    logp = model.compile_logp(vars=[model["x"]])(POINT)
    np.testing.assert_allclose(logp, manual_logp(est, RAGGED, POINT).sum(), rtol=1e-5)


def test_one_batched_op_whatever_the_number_of_groups():
    """One JAX call for the whole likelihood and one VJP call for its gradient, however
    many subjects and trials: the compiled functions contain no per-group loop."""
    est = race_mnle()

    def n_ops(fn):
        return sum(isinstance(node.op, ForkSafeJAXOp) for node in fn.f.maker.fgraph.apply_nodes)

    for data in (DATA, race.hierarchical_data(J, 3 * T, seed=4)):
        model = hierarchical_model(est, data, "flat")
        assert n_ops(model.compile_logp()) == 1
        assert n_ops(model.compile_dlogp()) == 1  # the VJP Op only (no forward call needed)


def test_gradient_matches_finite_differences_with_covariates(x64):
    est = race_mnle().astype(jnp.float64)
    model = hierarchical_model(est, RAGGED, "flat")
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    grad = dlogp(POINT)
    flat = np.concatenate([np.atleast_1d(POINT[v.name]) for v in model.value_vars])
    sizes = [np.atleast_1d(POINT[v.name]).size for v in model.value_vars]

    def unflat(vec):
        out, i = {}, 0
        for v, n in zip(model.value_vars, sizes, strict=True):
            out[v.name] = vec[i : i + n] if np.ndim(POINT[v.name]) else vec[i]
            i += n
        return out

    h = 1e-6
    fd = np.array(
        [
            (logp(unflat(flat + h * e)) - logp(unflat(flat - h * e))) / (2 * h)
            for e in np.eye(flat.size)
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)
    # the likelihood (not only the prior) drives the gradient
    lik = model.logp(vars=[model["x"]])
    # hyper-parameters reach the likelihood only through the subject-level variables
    grads = pytensor.grad(lik, model.value_vars, disconnected_inputs="ignore")
    lik_grad = model.compile_fn(grads, point_fn=True)
    assert max(np.abs(g).max() for g in lik_grad(POINT)) > 1.0


N_PP = 100  # posterior "draws" (all at POINT) of the predictive test


def test_posterior_predictive_draws_mixed_data():
    est = race_mnle()
    model = hierarchical_model(est, DATA, "grouped")
    post = xr.Dataset(
        {
            k: (
                ("chain", "draw", *(("subject",) if np.ndim(v) else ())),
                np.broadcast_to(np.asarray(v), (1, N_PP, *np.shape(v))),
            )
            for k, v in {
                "mu_v": 0.9,
                "mu_b": -0.4,
                "sigma": 0.6,
                "v": POINT["v"],
                "b": POINT["b"],
            }.items()
        },
        coords={"chain": [0], "draw": np.arange(N_PP), "subject": np.arange(J)},
    )
    with model:
        pp = pm.sample_posterior_predictive(
            az.from_dict(
                {"posterior": {k: post[k].values for k in post}},
                dims={"v": ["subject"], "b": ["subject"]},
                coords={"subject": np.arange(J)},
            ),
            progressbar=False,
            random_seed=0,
        )
    x = np.asarray(pp.posterior_predictive["x"])
    assert x.shape == (1, N_PP, J, T, 2)
    assert set(np.unique(x[..., 1])) <= {0.0, 1.0} and np.all(x[..., 0] > 0)
    # the draws come from the surrogate at each trial's own parameters and covariate: the
    # choices of the N_PP x J x T trials match its category probabilities (trial (j, t) has v_j,
    # b_j, sigma = 0.6 and covariate s[j, t]; a draw at another subject's v would not)
    s = DATA["s"].reshape(J, T)
    ctx = np.stack(
        [
            np.broadcast_to(POINT["v"][:, None], (J, T)),
            np.broadcast_to(POINT["b"][:, None], (J, T)),
            np.full((J, T), 0.6),
            s,
        ],
        -1,
    ).reshape(-1, 4)
    std = est.standardization
    log_pi = est.module.apply(est.params, std.theta(ctx), method="category_log_probs")
    p1 = np.exp(np.asarray(log_pi, np.float64))[:, 1].reshape(J, T)
    # per subject: N_PP draws x T trials, unequal probabilities of mean p1.mean(1) (the
    # binomial bound is conservative for them); 4 MCSE <= 0.058, the subjects' means differ
    # by up to 0.24
    assert_prob_within_mcse(x[..., 1].sum(axis=(0, 1, 3)), N_PP * T, p1.mean(1))


def test_missing_or_wrong_covariates_raise():
    est = race_mnle()
    with pm.Model():
        v = pm.Normal("v", 1, 0.2)
        with pytest.raises(ValueError, match="covariate"):
            ps.NeuralLikelihood("x", est, {"v": v, "b": -0.5, "sigma": 0.6}, observed=DATA["x"])
        with pytest.raises(ValueError, match="expected"):
            ps.NeuralLikelihood(
                "y",
                est,
                {"v": v, "b": -0.5, "sigma": 0.6},
                observed=DATA["x"],
                covariates=np.ones((len(DATA["s"]), 2)),
            )


def test_out_of_range_observations_and_covariates_warn():
    est = race_mnle()
    x = DATA["x"].copy()
    x[0, 0] = 50 * float(np.asarray(est.data_range.x_max)[0])
    s = DATA["s"].copy()
    s[1] = 3.0
    with pm.Model():
        v = pm.Normal("v", 1, 0.2)
        with pytest.warns(ps.terms.OutOfRangeWarning) as rec:
            ps.NeuralLikelihood(
                "x", est, {"v": v, "b": -0.5, "sigma": 0.6}, observed=x, covariates=s
            )
    msg = str(rec[0].message)
    assert "'x[0]'" in msg and "'covariate[0]'" in msg and "'x[1]'" not in msg
    with pm.Model(), warnings.catch_warnings():
        warnings.simplefilter("error", ps.terms.OutOfRangeWarning)
        v = pm.Normal("v", 1, 0.2)
        ps.NeuralLikelihood(
            "x", est, {"v": v, "b": -0.5, "sigma": 0.6}, observed=DATA["x"], covariates=DATA["s"]
        )


def _fake_posterior(values, n=20):
    return az.from_dict(
        {
            "posterior": {
                k: np.broadcast_to(np.asarray(v, float), (1, n, *np.shape(v))).copy()
                for k, v in values.items()
            }
        },
        dims={"v": ["subject"], "b": ["subject"]},
        coords={"subject": np.arange(J)},
    )


def test_posterior_range_check_names_the_parameter():
    est = race_mnle()
    model = hierarchical_model(est, DATA, "flat")
    inside = {"mu_v": 1.0, "mu_b": -0.4, "sigma": 0.6, "v": POINT["v"], "b": POINT["b"]}
    assert ps.check_posterior_range(_fake_posterior(inside), model, warn=False) == {}
    outside = {**inside, "v": np.array([0.8, 2.6, 1.0, 1.0]), "sigma": 0.1}
    with pytest.warns(ps.terms.OutOfRangeWarning, match="'v'") as rec:
        out = ps.check_posterior_range(_fake_posterior(outside), model)
    assert set(out) == {"x"} and len(out["x"]) == 2  # v and sigma, not b
    assert "'sigma'" in str(rec[0].message) and "'b'" not in str(rec[0].message)


def test_predictive_check_surrogate_vs_simulator():
    """At fixed parameters the surrogate's statistics agree with the simulator's."""
    est = race_mnle()
    data = race.hierarchical_data(J, 50, seed=6)
    model = hierarchical_model(est, data, "flat")
    truth = {"mu_v": 1.0, "mu_b": -0.5, "sigma": data["sigma"], "v": data["v"], "b": data["b"]}
    check = ps.predictive_check(
        model, _fake_posterior(truth, n=60), "x", race.simulator, num_draws=60, seed=1
    )
    table = check.summary()
    assert check.simulator.shape == check.surrogate.shape == (60, len(check.names))
    assert check.x_simulator.shape == check.x_surrogate.shape == (60, J * 50, 2)
    # the simulator side is the real model: P(k=1) matches the exact choice probability
    idx = data["subject"]
    p_exact = norm.cdf(np.sqrt(2) * data["v"][idx] * data["s"] / data["sigma"]).mean()
    n = J * 50 * 60  # trials of all replicates
    freq = check.simulator[:, check.names.index("P(x[1]=1)")].mean()
    assert_prob_within_mcse(freq * n, n, p_exact)
    # the small test surrogate is close: choice rate within 1 replicate sd, rt summaries
    # within 10% (its real error, ~1 replicate sd, is what the check is for)
    assert abs(table.loc["P(x[1]=1)", "std_diff"]) < 1.0, table
    for stat in ["mean(x[0])", "q50(x[0])"]:
        rel = table.loc[stat, "surrogate_mean"] / table.loc[stat, "simulator_mean"] - 1
        assert abs(rel) < 0.1, table
    # and it flags a simulator that disagrees: reaction times 1.5x slower
    slow = lambda key, theta, s: race.simulator(key, theta, s) * jnp.array([1.5, 1.0])
    shifted = ps.predictive_check(model, _fake_posterior(truth, n=60), "x", slow, num_draws=60)
    assert abs(shifted.summary().loc["mean(x[0])", "std_diff"]) > 5
    import matplotlib

    matplotlib.use("Agg")
    axes = check.plot()
    assert sum(ax.get_visible() for ax in axes) == min(12, len(check.names))


# Surrogate allowances of race_mnle (8,000 simulations, 25 epochs) on the 60 x 60 grid
# posterior of one subject (deterministic: no Monte Carlo), see the test's docstring
RACE_GRID_MEAN_ALLOWANCE = 1.5  # posterior-mean error, in exact-posterior sds
RACE_GRID_SD_FACTOR = 2.0  # posterior sd within this factor of the exact one


def test_surrogate_posterior_close_to_exact_on_a_grid():
    """One subject, 80 trials, (v, b) on a 60x60 grid with sigma known (no MCMC noise).

    Tolerance for this deliberately small test surrogate (8,000 simulations, 25 epochs;
    ~0.005 nats/trial from the exact likelihood): posterior means within 1.5 exact-posterior
    sd, sds within a factor 2. Ignoring the covariate or the choice would miss by far more.
    The full-size example (slow test below) is held to 0.5 sd."""
    est = race_mnle()
    d = race.hierarchical_data(1, 80, seed=7)
    v, b = np.meshgrid(np.linspace(0.2, 2.0, 60), np.linspace(-1.2, 0.2, 60), indexing="ij")
    theta = np.stack([v.ravel(), b.ravel(), np.full(v.size, d["sigma"])], -1)
    lp_sur = np.asarray(est.log_prob(d["x"][None], theta[:, None], d["s"][None, :, None])).sum(1)
    lp_ex = race.exact_log_likelihood_np(
        d["x"][None, :, 0],
        d["x"][None, :, 1],
        v.ravel()[:, None],
        b.ravel()[:, None],
        d["sigma"],
        d["s"][None],
    ).sum(1)
    for j, grid in enumerate([v.ravel(), b.ravel()]):
        moments = []
        for lp in (lp_ex, lp_sur):
            w = np.exp(lp - lp.max())
            w /= w.sum()
            m = (w * grid).sum()
            moments.append((m, np.sqrt((w * (grid - m) ** 2).sum())))
        (m_ex, sd_ex), (m_sur, sd_sur) = moments
        assert abs(m_sur - m_ex) < RACE_GRID_MEAN_ALLOWANCE * sd_ex, (j, moments)
        assert 1 / RACE_GRID_SD_FACTOR < sd_sur / sd_ex < RACE_GRID_SD_FACTOR, (j, moments)


def test_numpyro_nuts_on_the_hierarchical_surrogate():
    """pm.sample(nuts_sampler="numpyro") runs on the grouped hierarchical model."""
    est = race_mnle()
    with hierarchical_model(est, DATA, "grouped"):
        idata = pm.sample(
            draws=100,
            tune=100,
            chains=2,
            nuts_sampler="numpyro",
            random_seed=3,
            progressbar=False,
            nuts={"chain_method": "vectorized"},
        )
    v = idata.posterior["v"].values
    assert v.shape == (2, 100, J) and np.all(np.isfinite(v))
    # the data inform v: the posterior mean moves towards the true subject values
    assert np.mean(np.abs(v.mean((0, 1)) - DATA["v"])) < 0.3


@pytest.mark.slow
def test_example_surrogate_matches_exact_posterior():
    """The docs example at full size (10 x 100, NUTS 4 x 1000 for both models)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[2] / "examples" / "ddm_hierarchical.py"
    spec = importlib.util.spec_from_file_location("race_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(progressbar=False)
    assert result["max_abs_z"] < 0.5, result
