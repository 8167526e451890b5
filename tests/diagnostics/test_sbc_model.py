"""SBC of a whole hierarchical pm.Model (run_sbc_model), exact and with a neural likelihood.

Known answers: a non-centred hierarchical Gaussian model sampled with its own
exact likelihood is calibrated (ranks uniform for the hyperparameters and
every group parameter); the same model fed data with three times its assumed
noise is over-confident, and the test must reject it. With the linear-Gaussian
NLE as the per-trial likelihood inside a hierarchical model, the surrogate is
checked end to end, hierarchy and sampler included.
"""

import jax
import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian
from pymc_sbi.diagnostics import run_sbc_model, uniformity

G, T = 4, 5


def hierarchical_gaussian():
    with pm.Model(coords={"group": range(G)}) as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        tau = pm.HalfNormal("tau", 1.0)
        offset = pm.Normal("offset", 0.0, 1.0, dims="group")
        theta = pm.Deterministic("theta", mu + tau * offset, dims="group")
        pm.Normal("y", theta[:, None], 1.0, observed=np.zeros((G, T)))
    return model


def simulate_gaussian(noise):
    def simulate(draw, rng):
        return rng.normal(draw["theta"][:, None], noise, size=(G, T))

    return simulate


@pytest.fixture(scope="module")
def calibrated():
    return run_sbc_model(
        hierarchical_gaussian(), simulate_gaussian(1.0), "y", num_datasets=100,
        num_posterior_samples=200, chains=4, num_warmup=300, seed=0,
    )  # fmt: skip


def test_exact_hierarchical_model_is_calibrated(calibrated):
    res = calibrated
    assert res.labels == ("mu", "tau", "offset[0]", "offset[1]", "offset[2]", "offset[3]")
    assert res.ranks.shape == (100, 6) and res.num_posterior_samples == 200
    assert res.x.shape == (100, G, T)
    # the truth: tau is positive, theta_true was built from the same draw
    assert np.all(res.theta_true[:, 1] > 0)
    p = uniformity(res)["pot_c"]
    # six p-values of a calibrated model: all above 0.001 (the chance of one
    # below is < 0.6% under uniformity; the seed is fixed)
    assert p.min() > 1e-3, dict(zip(res.labels, p.round(4), strict=True))


def test_overconfident_model_is_caught():
    res = run_sbc_model(
        hierarchical_gaussian(), simulate_gaussian(3.0), "y", var_names=["theta"],
        num_datasets=100, num_posterior_samples=200, chains=4, num_warmup=300, seed=1,
    )  # fmt: skip
    assert res.labels == tuple(f"theta[{g}]" for g in range(G))
    p = uniformity(res)["pot_c"]
    assert np.all(p < 1e-4), p


def test_same_seed_same_ranks_and_errors():
    model = hierarchical_gaussian()
    small = dict(num_datasets=5, num_posterior_samples=20, chains=2, num_warmup=50, seed=4)
    a = run_sbc_model(model, simulate_gaussian(1.0), "y", **small)
    b = run_sbc_model(model, simulate_gaussian(1.0), "y", **small)
    np.testing.assert_array_equal(a.ranks, b.ranks)
    np.testing.assert_array_equal(a.x, b.x)
    with pytest.raises(ValueError, match="not an observed variable"):
        run_sbc_model(model, simulate_gaussian(1.0), "mu", num_datasets=4)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        run_sbc_model(model, lambda d, rng: np.zeros(5), "y", num_datasets=4)
    with pytest.raises(ValueError, match="Unknown variable"):
        run_sbc_model(model, simulate_gaussian(1.0), "y", var_names=["nope"], num_datasets=4)


def test_hierarchical_model_with_neural_likelihood(lg_nle):
    """Group means theta_g ~ N(mu, 0.5^2 I), trials x ~ surrogate(theta_g), flat layout with
    theta[group_idx]; the real simulator makes the data. 40 datasets x 100 draws."""
    group_idx = np.repeat(np.arange(3), 4)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 0.5, shape=2)
        offset = pm.Normal("offset", 0.0, 1.0, shape=(3, 2))
        theta = pm.Deterministic("theta", mu + 0.5 * offset)
        ps.NeuralLikelihood(
            "x", lg_nle, params={"theta": theta[group_idx]}, observed=np.zeros((12, 2))
        )
    sim = jax.jit(jax.vmap(linear_gaussian.simulator))

    def simulate(draw, rng):
        keys = jax.random.split(jax.random.key(int(rng.integers(2**31))), 12)
        return np.asarray(sim(keys, draw["theta"][group_idx]))

    res = run_sbc_model(
        model, simulate, "x", var_names=["mu", "theta"], num_datasets=40,
        num_posterior_samples=100, chains=4, num_warmup=200, seed=2,
    )  # fmt: skip
    assert res.ranks.shape == (40, 8)
    p = uniformity(res)["pot_c"]
    # the surrogate is good to ~0.35 posterior sd (test_likelihood); at 40 datasets
    # that is not detectable, a broken term (wrong params/trials) would be
    assert p.min() > 1e-3, dict(zip(res.labels, p.round(4), strict=True))
