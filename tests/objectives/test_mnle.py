"""MNLE: the mixed density normalises, matches the race model, saves/loads, rejects bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from mcse import assert_prob_within_mcse
from race_helpers import race_mnle, race_mnle_shared, race_simulations
from scipy.stats import norm

import pymc_sbi as ps
from pymc_sbi.benchmarks import race

THETAS = np.array([[1.2, -0.4, 0.6], [0.3, 0.2, 1.0], [1.8, -1.2, 0.4]])
S = np.array([0.5, -0.2, 0.9])
# both MixedDensity architectures: separate networks and shared_trunk=True
BOTH = pytest.mark.parametrize(
    "make", [race_mnle, race_mnle_shared], ids=["separate", "shared_trunk"]
)


@BOTH
def test_density_normalises(make):
    """sum over the choice x integral over rt of q(rt, k | theta, s) = 1 (trapezoid in log rt)."""
    est = make()
    log_rt = np.linspace(-9.0, 6.0, 6001)
    rt = np.exp(log_rt)
    for theta, s in zip(THETAS, S, strict=True):
        total = 0.0
        for k in (0, 1):
            x = np.stack([rt, np.full_like(rt, k)], -1)
            q = np.exp(np.asarray(est.log_prob(x, theta, np.array([s])), np.float64))
            total += np.trapezoid(q * rt, log_rt)  # dy = rt d(log rt)
        assert abs(total - 1.0) < 2e-3, total


# Surrogate allowances of the race MNLEs (8,000 single-trial simulations, 25 epochs), both
# deterministic (no Monte Carlo): the choice probability at THETAS x S, and the mean
# log-likelihood error per trial on 500 fresh trials.
CHOICE_PROB_ALLOWANCE = 0.06  # absolute; 8,000 training trials give ~0.05 accuracy
LOG_LIK_GAP_ALLOWANCE = 0.1  # nats per trial (a KL-like gap)


@BOTH
def test_choice_probabilities_match_exact(make):
    """P(k=1 | theta, s) = Phi(sqrt(2) v s / sigma), to CHOICE_PROB_ALLOWANCE."""
    est = make()
    ctx = np.concatenate([THETAS, S[:, None]], -1)
    std = est.standardization
    log_pi = est.module.apply(est.params, std.theta(ctx), method="category_log_probs")
    p1 = np.exp(np.asarray(log_pi))[:, 1]
    exact = norm.cdf(np.sqrt(2) * THETAS[:, 0] * S / THETAS[:, 2])
    np.testing.assert_allclose(p1, exact, atol=CHOICE_PROB_ALLOWANCE)


@BOTH
def test_log_prob_close_to_exact_likelihood(make):
    """Mean per-trial log-likelihood error on data from the model is small (not an identity)."""
    est = make()
    rng = np.random.default_rng(5)
    theta = np.c_[
        rng.uniform(0.2, 1.8, 500), rng.uniform(-1.2, 0.2, 500), rng.uniform(0.4, 1.1, 500)
    ]
    s = rng.uniform(-1, 1, 500)
    x = np.asarray(
        jax.vmap(race.simulator)(jax.random.split(jax.random.key(0), 500), theta, s[:, None])
    )
    lp = np.asarray(est.log_prob(x, theta, s[:, None]), np.float64)
    ex = race.exact_log_likelihood_np(x[:, 0], x[:, 1], *theta.T, s)
    assert abs(np.mean(lp - ex)) < LOG_LIK_GAP_ALLOWANCE
    assert np.corrcoef(lp, ex)[0, 1] > 0.95


def test_sampling_matches_category_probabilities():
    est = race_mnle()
    theta, s = THETAS[0], np.array([S[0]])
    x = np.asarray(est.sample(jax.random.key(0), theta, num_samples=4000, covariates=s))
    assert x.shape == (4000, 2)
    assert set(np.unique(x[:, 1])) <= {0.0, 1.0}
    assert np.all(x[:, 0] > 0)
    ctx = np.concatenate([theta, s])[None]
    p1 = float(
        np.exp(
            est.module.apply(
                est.params, est.standardization.theta(ctx), method="category_log_probs"
            )
        )[0, 1]
    )
    assert_prob_within_mcse(x[:, 1].sum(), 4000, p1)


def test_invalid_values_have_zero_density():
    est = race_mnle()
    x = np.array([[-0.5, 1.0], [0.5, 2.0], [0.5, 0.5], [0.5, 1.0]])
    lp = np.asarray(est.log_prob(x, THETAS[0], np.array([0.1])))
    assert np.all(np.isneginf(lp[:3])) and np.isfinite(lp[3])


def test_save_load_roundtrip(tmp_path):
    est = race_mnle()
    path = tmp_path / "mnle.safetensors"
    est.save(path)
    loaded = ps.load(path)
    assert loaded.kind == "mnle" and loaded.n_covariates == 1
    assert loaded.module.num_categories == 2 and loaded.module.log_transform
    x = race_simulations().x[:20]
    np.testing.assert_array_equal(
        np.asarray(loaded.log_prob(x, THETAS[0], np.array([0.3]))),
        np.asarray(est.log_prob(x, THETAS[0], np.array([0.3]))),
    )
    for a, b in zip(loaded.data_range, est.data_range, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_data_range_is_training_min_max():
    sims, est = race_simulations(), race_mnle()
    # the range covers the training split (90%): inside the full min/max, close to it
    full_lo = np.r_[sims.theta.min(0), sims.covariates.min(0)]
    full_hi = np.r_[sims.theta.max(0), sims.covariates.max(0)]
    lo, hi = np.asarray(est.data_range.context_min), np.asarray(est.data_range.context_max)
    assert np.all(lo >= full_lo - 1e-6) and np.all(hi <= full_hi + 1e-6)
    np.testing.assert_allclose(lo, full_lo, atol=0.02)


def test_bad_inputs_raise_clear_errors():
    batch = {"theta": np.zeros((10, 1)), "x": np.c_[np.ones(10), np.full(10, 0.5)]}
    with pytest.raises(ValueError, match="category"):
        ps.mnle().init(jax.random.key(0), batch, optax.adam(1e-3))
    batch = {"theta": np.zeros((10, 1)), "x": np.c_[-np.ones(10), np.zeros(10)]}
    with pytest.raises(ValueError, match="positive"):
        ps.mnle().init(jax.random.key(0), batch, optax.adam(1e-3))
    with pytest.raises(TypeError, match="MixedDensity"):
        ps.mnle(ps.nn.maf())
    est = race_mnle()
    with pytest.raises(ValueError, match="covariate"):
        est.log_prob(np.ones(2), THETAS[0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 1\)"):
        est.log_prob(np.ones(2), THETAS[0], np.ones(2))


def test_log_transform_off_for_real_valued_data():
    """Without the log transform, negative continuous data are modelled (normalisation check)."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3000, 1))
    k = (rng.uniform(size=3000) < 0.5 + 0.3 * np.tanh(theta[:, 0])).astype(float)
    y = theta[:, 0] + (2 * k - 1) + 0.3 * rng.normal(size=3000)
    spec = ps.ParamSpec(names=("t",), shapes=((),), lower=(-np.inf,), upper=(np.inf,))
    sims = ps.Simulations(theta=theta, x=np.c_[y, k], spec=spec)
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=2, hidden_features=16), log_transform=False)
    est = ps.fit(ps.mnle(net), sims, ps.TrainConfig(max_epochs=5), seed=0, progressbar=False)
    grid = np.linspace(-8, 8, 4001)
    total = sum(
        np.trapezoid(
            np.exp(np.asarray(est.log_prob(np.c_[grid, np.full_like(grid, c)], [0.4]))), grid
        )
        for c in (0, 1)
    )
    assert abs(total - 1) < 2e-3
    assert jnp.isfinite(est.log_prob(np.array([-1.0, 0.0]), [0.0]))


def test_sbc_of_mnle_term_with_covariates():
    """SBC of the race MNLE as a term (20 trials, one stimulus each) against the real
    simulator: 40 datasets x 100 draws; ranks of v, b, sigma must look uniform.

    The surrogate is small (25 epochs), but at 20 trials per dataset its error is
    well inside the posterior width; a wrong covariate pairing or a broken mixed
    density shifts the ranks far beyond what pot_c accepts at p > 0.001.
    """
    from pymc_sbi.diagnostics import run_sbc_model, uniformity

    est = race_mnle()
    s = np.linspace(-0.95, 0.95, 20)[:, None]
    sim = jax.jit(jax.vmap(race.simulator, in_axes=(0, None, 0)))
    placeholder = np.asarray(sim(jax.random.split(jax.random.key(0), 20), THETAS[0], s))
    model = race.prior_model()
    with model:
        params = {n: model[n] for n in est.spec.names}
        ps.NeuralLikelihood("x", est, params=params, observed=placeholder, covariates=s)

    def simulate(draw, rng):
        theta = np.array([draw[n] for n in est.spec.names])
        keys = jax.random.split(jax.random.key(int(rng.integers(2**31))), 20)
        return np.asarray(sim(keys, theta, s))

    res = run_sbc_model(
        model, simulate, "x", num_datasets=40, num_posterior_samples=100, chains=4,
        num_warmup=200, seed=0,
    )  # fmt: skip
    assert res.labels == tuple(est.spec.names)
    assert set(np.unique(res.x[..., 1])) <= {0.0, 1.0}
    p = uniformity(res)["pot_c"]
    assert p.min() > 1e-3, dict(zip(res.labels, p.round(4), strict=True))
