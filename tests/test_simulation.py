"""simulate / run_simulator / Simulations."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

from pymc_sbi.prior import param_spec
from pymc_sbi.simulation import Simulations, run_simulator, simulate
from pymc_sbi.spec import ParamSpec


@pytest.fixture(scope="module")
def model():
    """theta = (mu, sigma, w[0], w[1]): d = 4."""
    with pm.Model(coords={"k": ["a", "b"]}) as m:
        pm.Normal("mu", 0, 1)
        pm.HalfNormal("sigma", 1)
        pm.Normal("w", 0, 1, dims="k")
    return m


def noisy(key, theta):
    return theta + jax.random.normal(key, theta.shape)


def twice(key, theta):
    return 2.0 * theta


def _spec(names=("a", "b"), shapes=((), (2,))):
    d = sum(math.prod(s) for s in shapes)
    return ParamSpec(names=names, shapes=shapes, lower=(-math.inf,) * d, upper=(math.inf,) * d)


# ------------------------------------------------------------------ JAX simulators
@pytest.fixture(scope="module")
def noisy_sims(model):
    """50 noisy simulations, seed 3, batches of 7 (50 = 7 * 7 + 1: the last one is padded)."""
    return simulate(model, noisy, 50, seed=3, batch_size=7, progressbar=False)


def test_simulate_jax_shapes_names_and_prior_draws(model, noisy_sims):
    sims = noisy_sims
    assert len(sims) == 50
    assert sims.theta.shape == (50, 4) and sims.x.shape == (50, 4)
    assert sims.x_shape == (4,)
    assert sims.spec == param_spec(model)
    assert sims.spec.names == ("mu", "sigma", "w")
    assert sims.n_invalid == 0
    np.testing.assert_array_equal(sims.proposal, np.zeros(50, dtype=np.int32))
    assert sims.spec.in_support(sims.theta).all()
    assert np.unique(sims.theta, axis=0).shape[0] == 50
    # the noise is real and drawn per simulation (one key per row): residuals all differ
    resid = sims.x - sims.theta
    assert np.unique(resid[:, 0]).size == 50
    # N(0, 1) noise, independent over rows and coordinates: 200 i.i.d. standard normals
    assert_mean_within_mcse(resid.ravel(), 0.0)
    assert_sd_within_mcse(resid.ravel(), 1.0)


def test_simulate_jax_independent_of_batch_size_and_seeded(model, noisy_sims):
    one_batch = simulate(model, noisy, 50, seed=3, batch_size=1000, progressbar=False)
    np.testing.assert_array_equal(one_batch.theta, noisy_sims.theta)
    np.testing.assert_array_equal(one_batch.x, noisy_sims.x)
    other = simulate(model, noisy, 50, seed=4, batch_size=7, progressbar=False)
    assert not np.any(np.all(other.theta == noisy_sims.theta, axis=0))
    # different noise too, not only different theta
    assert not np.allclose(other.x - other.theta, noisy_sims.x - noisy_sims.theta)


def test_simulate_jax_deterministic_simulator_is_applied_row_by_row(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # all valid: no "Dropped" warning
        sims = simulate(model, twice, 37, seed=1, batch_size=8, progressbar=False)
    assert sims.n_invalid == 0 and len(sims) == 37
    # x is exactly the simulator at the recorded theta, in the simulator's dtype
    np.testing.assert_array_equal(sims.x, 2.0 * sims.theta.astype(sims.x.dtype))
    named = sims.params()
    np.testing.assert_array_equal(sims.x[:, 0], 2.0 * named["mu"].astype(sims.x.dtype))


def test_simulate_jax_matrix_output_keeps_x_shape(model):
    def sim(key, theta):  # (3, 2): row j is (j + 1) * (mu, sigma)
        return jnp.stack([(j + 1.0) * theta[:2] for j in range(3)])

    sims = simulate(model, sim, 20, seed=2, batch_size=6, progressbar=False)
    assert sims.x.shape == (20, 3, 2) and sims.x_shape == (3, 2)
    th = sims.theta[:, :2].astype(sims.x.dtype)
    for j in range(3):
        np.testing.assert_array_equal(sims.x[:, j, :], (j + 1.0) * th)


def test_simulate_names_subset(model):
    sims = simulate(model, twice, 10, seed=0, names=["w"], progressbar=False)
    assert sims.spec.names == ("w",) and sims.theta.shape == (10, 2)
    np.testing.assert_array_equal(sims.x, 2.0 * sims.theta.astype(sims.x.dtype))


def test_run_simulator_rejects_non_matrix_theta():
    with pytest.raises(ValueError, match=r"expected \(n, d\)"):
        run_simulator(noisy, np.zeros(3), seed=0)


# ------------------------------------------------------------------ NumPy simulators
def test_simulate_numpy_backend(model):
    seen = []

    def sim(rng, theta):
        assert isinstance(rng, np.random.Generator)
        seen.append(theta.copy())
        return theta[:, :2] * 3.0

    sims = simulate(model, sim, 25, seed=0, backend="numpy", batch_size=10, progressbar=False)
    assert [t.shape for t in seen] == [(10, 4), (10, 4), (5, 4)]
    np.testing.assert_array_equal(np.concatenate(seen), sims.theta)
    np.testing.assert_array_equal(sims.x, 3.0 * sims.theta[:, :2])
    assert sims.x_shape == (2,)
    assert sims.spec.in_support(sims.theta).all()


def test_simulate_numpy_seeded_noise(model):
    def sim(rng, theta):
        return theta + rng.normal(size=theta.shape)

    a = simulate(model, sim, 20, seed=1, backend="numpy", progressbar=False)
    b = simulate(model, sim, 20, seed=1, backend="numpy", progressbar=False)
    c = simulate(model, sim, 20, seed=2, backend="numpy", progressbar=False)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.allclose(a.x - a.theta, c.x - c.theta)


def test_simulate_numpy_wrong_number_of_rows(model):
    def sim(rng, theta):
        return theta[:-1]

    with pytest.raises(ValueError, match=r"x of shape \(9, \d+\) for 10 parameter vectors"):
        simulate(model, sim, 10, seed=0, backend="numpy", progressbar=False)


# ------------------------------------------------------------------ invalid output
def test_non_finite_simulations_are_dropped_and_counted(model):
    seen = []

    def sim(rng, theta):
        seen.append(theta.copy())
        x = np.repeat(theta[:, :1], 3, axis=1)
        x[theta[:, 0] > 0.5, 1] = np.nan  # one bad element spoils the row
        x[theta[:, 0] < -1.0, 2] = np.inf
        x[theta[:, 0] < -1.5, 0] = -np.inf
        return x

    n = 200
    with pytest.warns(UserWarning, match=rf"Dropped \d+ of {n}") as record:
        sims = simulate(model, sim, n, seed=8, backend="numpy", progressbar=False)
    drawn = np.concatenate(seen)
    bad = (drawn[:, 0] > 0.5) | (drawn[:, 0] < -1.0)
    assert 0 < bad.sum() < n  # the seed exercises both kept and dropped rows
    assert sims.n_invalid == int(bad.sum())
    assert len(sims) == n - sims.n_invalid
    assert any(f"Dropped {sims.n_invalid} of {n}" in str(w.message) for w in record)
    # exactly the valid pairs are kept, in order and still matched
    np.testing.assert_array_equal(sims.theta, drawn[~bad])
    np.testing.assert_array_equal(sims.x[:, 0], sims.theta[:, 0])
    assert np.isfinite(sims.x).all()
    np.testing.assert_array_equal(sims.proposal, np.zeros(len(sims), dtype=np.int32))


def test_all_invalid_raises(model):
    def sim(key, theta):
        return jnp.full((2,), jnp.nan)

    with pytest.raises(ValueError, match=r"All 12 simulations returned non-finite"):
        simulate(model, sim, 12, seed=0, progressbar=False)


def test_bad_backend_and_n(model):
    with pytest.raises(ValueError, match=r"backend must be 'jax' or 'numpy', got 'torch'"):
        simulate(model, twice, 5, seed=0, backend="torch", progressbar=False)
    for n in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            simulate(model, twice, n, seed=0, progressbar=False)


# ------------------------------------------------------------------ Simulations
def test_simulations_params_and_batch():
    spec = _spec()
    theta = np.arange(12.0).reshape(4, 3)
    sims = Simulations(theta=theta, x=np.ones((4, 5)), spec=spec)
    p = sims.params()
    assert list(p) == ["a", "b"]
    np.testing.assert_array_equal(p["a"], theta[:, 0])
    np.testing.assert_array_equal(p["b"], theta[:, 1:])
    batch = sims.as_batch()
    assert set(batch) == {"theta", "x"}
    np.testing.assert_array_equal(batch["theta"], theta)


def test_simulations_one_dimensional_x_becomes_a_column():
    sims = Simulations(theta=np.zeros((4, 3)), x=np.arange(4.0), spec=_spec())
    assert sims.x.shape == (4, 1) and sims.x_shape == (1,)
    np.testing.assert_array_equal(sims.x[:, 0], np.arange(4.0))  # row i keeps its value


def test_simulations_append():
    spec = _spec()
    a = Simulations(theta=np.zeros((3, 3)), x=np.zeros((3, 2)), spec=spec, n_invalid=2)
    b = Simulations(
        theta=np.ones((4, 3)), x=np.ones((4, 2)), spec=spec, proposal=np.full(4, 1), n_invalid=5
    )
    c = a.append(b)
    assert len(c) == 7 and c.spec == spec
    np.testing.assert_array_equal(c.theta, np.concatenate([a.theta, b.theta]))
    np.testing.assert_array_equal(c.x, np.concatenate([a.x, b.x]))
    np.testing.assert_array_equal(c.proposal, [0, 0, 0, 1, 1, 1, 1])
    assert c.n_invalid == 7
    assert len(a) == 3 and len(b) == 4  # immutable: inputs unchanged


def test_simulations_append_rejects_mismatch():
    a = Simulations(theta=np.zeros((3, 3)), x=np.zeros((3, 2)), spec=_spec())
    other_names = Simulations(theta=np.zeros((3, 3)), x=np.zeros((3, 2)), spec=_spec(("a", "c")))
    other_shapes = Simulations(
        theta=np.zeros((3, 3)), x=np.zeros((3, 2)), spec=_spec(("a", "b"), ((2,), ()))
    )
    other_x = Simulations(theta=np.zeros((3, 3)), x=np.zeros((3, 4)), spec=_spec())
    with pytest.raises(ValueError, match="different parameters"):
        a.append(other_names)
    with pytest.raises(ValueError, match="different parameters"):
        a.append(other_shapes)
    with pytest.raises(ValueError, match=r"x shapes differ: \(2,\) vs \(4,\)"):
        a.append(other_x)


def test_simulations_validates_shapes():
    spec = _spec()
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\); expected \(5, \.\.\.\)"):
        Simulations(theta=np.zeros((5, 3)), x=np.zeros((4, 2)), spec=spec)
    with pytest.raises(ValueError, match=r"theta has shape \(5, 2\); expected \(n, 3\)"):
        Simulations(theta=np.zeros((5, 2)), x=np.zeros((5, 2)), spec=spec)
    with pytest.raises(ValueError, match=r"expected \(n, 3\)"):
        Simulations(theta=np.zeros(3), x=np.zeros((1, 2)), spec=spec)


def test_simulations_validates_proposal_length():
    # a proposal id per pair: a wrong-length proposal would misalign after append
    with pytest.raises(ValueError, match="proposal"):
        Simulations(theta=np.zeros((5, 3)), x=np.zeros((5, 2)), spec=_spec(), proposal=np.zeros(3))
