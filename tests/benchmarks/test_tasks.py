"""Tests for the benchmark tasks (two_moons, linear_gaussian) and shipped sbibm data."""

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest
from scipy import stats

from pymc_sbi.benchmarks import TASKS, Task, get_task, linear_gaussian, slcp, two_moons
from pymc_sbi.benchmarks.tasks import (
    LG_LIKELIHOOD_COV,
    linear_gaussian_posterior,
    two_moons_log_likelihood,
)

ALL_TASKS = [two_moons, linear_gaussian]


def _simulate(task: Task, theta: np.ndarray, seed: int = 0) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), theta.shape[0])
    return np.asarray(jax.jit(jax.vmap(task.simulator))(keys, jnp.asarray(theta)))


def _midpoints(lo: float, hi: float, h: float) -> np.ndarray:
    return np.arange(lo + h / 2, hi, h)


# ------------------------------------------------------------------------ registry


def test_registry_and_get_task():
    assert TASKS == {"two_moons": two_moons, "slcp": slcp, "linear_gaussian": linear_gaussian}
    assert get_task("two_moons") is two_moons and get_task("slcp") is slcp
    with pytest.raises(ValueError, match="Available tasks: linear_gaussian, slcp, two_moons"):
        get_task("three_moons")


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
def test_prior_model_is_fresh_and_matches_param_names(task):
    m1, m2 = task.prior_model(), task.prior_model()
    assert m1 is not m2
    assert [rv.name for rv in m1.free_RVs] == ["theta"]
    draws = np.asarray(pm.draw(m1["theta"], draws=2000, random_seed=0), dtype=float)
    assert draws.shape == (2000, 2)
    assert task.dim_parameters == len(task.param_names) == 2
    assert task.param_names == ("theta[0]", "theta[1]")
    if task is two_moons:
        assert draws.min() >= -1 and draws.max() <= 1
        assert abs(draws.mean()) < 0.05  # Uniform(-1, 1): sd of mean = 0.58/sqrt(4000)


# ----------------------------------------------------------------------- simulators


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("x64", [False, True])
def test_simulator_shapes_vmap_jit_dtype(task, x64):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        theta = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (7, 2)), dtype)
        keys = jax.random.split(jax.random.key(1), 7)
        x = jax.jit(jax.vmap(task.simulator))(keys, theta)
        assert x.shape == (7, task.dim_data)
        assert x.dtype == dtype
        assert np.all(np.isfinite(np.asarray(x)))
        # Pure: same key, same output; the vmapped batch row equals the single
        # call (up to rounding of differently fused code).
        x_single = jax.jit(task.simulator)(keys[2], theta[2])
        assert x_single.shape == (task.dim_data,)
        np.testing.assert_allclose(x_single, x[2], rtol=1e-6)
        np.testing.assert_array_equal(jax.jit(jax.vmap(task.simulator))(keys, theta), x)
        ll = jax.jit(jax.vmap(task.log_likelihood))(theta, x)
        assert ll.shape == (7,)
        assert ll.dtype == dtype
        assert np.all(np.isfinite(np.asarray(ll)))


# --------------------------------------------------------------------- sbibm data


def test_two_moons_data_equals_sbibm_files():
    # Values as printed in sbibm 1.1.0's CSV files.
    np.testing.assert_array_equal(two_moons.observation(1), [-0.6396706, 0.16234657])
    np.testing.assert_array_equal(two_moons.true_parameters(1), [-0.8176656, -0.5756806])
    ref = two_moons.reference_samples(1)
    assert ref.shape == (10_000, 2)
    np.testing.assert_array_equal(ref[:2], [[-0.8059562, -0.5836492], [0.6062782, 0.7996782]])
    for num in range(1, 11):
        ref = two_moons.reference_samples(num)
        assert ref.shape == (10_000, 2)
        assert np.all(np.abs(ref) <= 1.0)  # inside the Uniform(-1, 1) prior box
        assert two_moons.observation(num).shape == (2,)
        assert two_moons.true_parameters(num).shape == (2,)
    # Returned arrays are copies: mutating them does not corrupt the cache.
    obs = two_moons.observation(1)
    obs[:] = 0.0
    assert two_moons.observation(1)[0] == -0.6396706


@pytest.mark.parametrize("num", [0, 11, 1.0])
def test_bad_observation_number(num):
    with pytest.raises(ValueError, match=r"1\.\.10"):
        two_moons.observation(num)


def test_slcp_data_shipped():
    from pymc_sbi.benchmarks.tasks import _load_sbibm_csv

    obs = _load_sbibm_csv("slcp", 1, "observation.csv")
    np.testing.assert_array_equal(obs[0, :2], [2.3718784, 0.49947417])
    for num in range(1, 11):
        assert _load_sbibm_csv("slcp", num, "observation.csv").shape == (1, 8)
        assert _load_sbibm_csv("slcp", num, "true_parameters.csv").shape == (1, 5)
        ref = _load_sbibm_csv("slcp", num, "reference_posterior_samples.csv.bz2")
        assert ref.shape == (10_000, 5)


# ------------------------------------------------------------- two moons likelihood


THETAS_TM = [(0.0, 0.0), (0.3, -0.7), (-0.8176656, -0.5756806)]


def _two_moons_x_grid(theta, h=5e-4):
    """Midpoint grid covering the support, with a cell edge on the boundary u = 0."""
    shift = np.asarray(two_moons_shift_np(theta))
    u = _midpoints(0.0, 0.16, h)
    v = _midpoints(-0.16, 0.16, h)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    x = np.stack([uu.ravel() + 0.25 + shift[0], vv.ravel() + shift[1]], axis=1)
    return x, h * h


def two_moons_shift_np(theta):
    c, s = np.cos(-np.pi / 4), np.sin(-np.pi / 4)
    z0 = c * theta[0] - s * theta[1]
    z1 = s * theta[0] + c * theta[1]
    return -abs(z0), z1


@pytest.mark.parametrize("theta", THETAS_TM)
def test_two_moons_density_integrates_to_one_and_matches_simulator(theta):
    x, cell = _two_moons_x_grid(theta)
    logp = jax.jit(jax.vmap(two_moons_log_likelihood, in_axes=(None, 0)))(
        jnp.asarray(theta), jnp.asarray(x)
    )
    w = np.exp(np.asarray(logp, dtype=np.float64)) * cell
    # Midpoint rule with h = 5e-4 on a density of width 0.01 and an edge on a
    # cell boundary: quadrature error is far below 1e-3.
    assert abs(w.sum() - 1.0) < 2e-3
    grid_mean = w @ x / w.sum()
    grid_cov = ((x - grid_mean) * w[:, None]).T @ (x - grid_mean) / w.sum()

    n = 100_000
    sims = _simulate(two_moons, np.tile(np.asarray(theta, np.float32), (n, 1)), seed=3)
    sim_mean = sims.mean(axis=0)
    sim_cov = np.cov(sims, rowvar=False)
    # Monte Carlo standard errors: sd/sqrt(n) for means; for second moments
    # sqrt(var((x-m)_i (x-m)_j)/n) estimated from the draws. Allow 5 se.
    se_mean = sims.std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(sim_mean - grid_mean), 5 * se_mean + 1e-5)
    c = sims - sim_mean
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(sim_cov - grid_cov), 5 * se_cov + 1e-6)


def test_two_moons_likelihood_support_and_gradient():
    theta = jnp.array([0.2, 0.4])
    x = jnp.asarray(two_moons_shift_np(np.asarray(theta))) + jnp.array([0.25 - 0.05, 0.0])
    assert jax.jit(two_moons_log_likelihood)(theta, x) == -jnp.inf  # u < 0: outside support
    g = jax.jit(jax.grad(two_moons_log_likelihood))(theta, x)
    assert np.all(np.isfinite(np.asarray(g)))  # no NaN gradients outside support


def test_two_moons_grid_posterior_matches_reference_samples():
    """Uniform prior x exact likelihood on a grid vs sbibm's reference samples."""
    num = 1
    h = 2e-3
    t = _midpoints(-1.0, 1.0, h)
    tt0, tt1 = np.meshgrid(t, t, indexing="ij")
    thetas = np.stack([tt0.ravel(), tt1.ravel()], axis=1)
    x_obs = jnp.asarray(two_moons.observation(num))
    logp = np.asarray(
        jax.jit(jax.vmap(two_moons_log_likelihood, in_axes=(0, None)))(jnp.asarray(thetas), x_obs),
        dtype=np.float64,
    )
    w = np.exp(logp - logp.max())
    w /= w.sum()
    grid_mean = w @ thetas
    grid_cov = ((thetas - grid_mean) * w[:, None]).T @ (thetas - grid_mean)

    ref = two_moons.reference_samples(num)
    n = ref.shape[0]
    se_mean = ref.std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(ref.mean(axis=0) - grid_mean), 5 * se_mean + 1e-3)
    c = ref - ref.mean(axis=0)
    se_cov = (c[:, :, None] * c[:, None, :]).std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(np.cov(ref, rowvar=False) - grid_cov), 5 * se_cov + 1e-3)


# ------------------------------------------------------------------ linear gaussian


def _lg_grid_posterior(x_trials: np.ndarray):
    """Brute force: N(0, I) prior x prod_i N(x_i; theta, Sigma) on a midpoint grid."""
    h = 0.01
    t = _midpoints(-4.0, 4.0, h)
    tt0, tt1 = np.meshgrid(t, t, indexing="ij")
    thetas = np.stack([tt0.ravel(), tt1.ravel()], axis=1)
    logp = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(thetas)
    lik = stats.multivariate_normal(np.zeros(2), LG_LIKELIHOOD_COV)
    for xi in x_trials:
        logp = logp + lik.logpdf(xi - thetas)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = w @ thetas
    cov = ((thetas - mean) * w[:, None]).T @ (thetas - mean)
    return mean, cov


@pytest.mark.parametrize("n_trials", [1, 5])
def test_linear_gaussian_analytic_matches_grid(n_trials):
    rng = np.random.default_rng(n_trials)
    theta_true = np.array([0.7, -0.4])
    x = theta_true + rng.multivariate_normal(np.zeros(2), LG_LIKELIHOOD_COV, size=n_trials)
    mean, cov = linear_gaussian_posterior(x)
    grid_mean, grid_cov = _lg_grid_posterior(x)
    # The midpoint rule is spectrally accurate for a Gaussian well inside the
    # box (posterior sd <= 0.6, box +-4): agreement to ~1e-8.
    np.testing.assert_allclose(mean, grid_mean, atol=1e-6)
    np.testing.assert_allclose(cov, grid_cov, atol=1e-6)
    assert abs(cov[0, 1]) > 0.01  # correlated likelihood -> non-diagonal posterior


def test_linear_gaussian_task_functions_consistent():
    num = 3
    x_obs = linear_gaussian.observation(num)
    mean, cov = linear_gaussian.analytic_posterior(x_obs[None, :])
    np.testing.assert_allclose(linear_gaussian.posterior_mean(num), mean)
    np.testing.assert_allclose(linear_gaussian.posterior_cov(num), cov)
    # Same as the (2,) form and deterministic across calls.
    np.testing.assert_allclose(linear_gaussian_posterior(x_obs)[0], mean)
    np.testing.assert_array_equal(linear_gaussian.observation(num), x_obs)
    assert not np.allclose(linear_gaussian.observation(num + 1), x_obs)

    ref = linear_gaussian.reference_samples(num)
    assert ref.shape == (10_000, 2)
    np.testing.assert_array_equal(ref, linear_gaussian.reference_samples(num))
    se_mean = np.sqrt(np.diag(cov) / ref.shape[0])
    np.testing.assert_array_less(np.abs(ref.mean(axis=0) - mean), 5 * se_mean)
    # sd of a sample covariance entry ~ sqrt((s_ii s_jj + s_ij^2) / n).
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / ref.shape[0])
    np.testing.assert_array_less(np.abs(np.cov(ref, rowvar=False) - cov), 5 * se_cov)

    with pytest.raises(ValueError, match="shape"):
        linear_gaussian_posterior(np.zeros((3, 3)))


def test_linear_gaussian_simulator_and_likelihood():
    theta = np.array([0.5, -1.0], np.float32)
    n = 50_000
    sims = _simulate(linear_gaussian, np.tile(theta, (n, 1)), seed=5).astype(np.float64)
    cov = LG_LIKELIHOOD_COV
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(sims.mean(axis=0) - theta), 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(sims, rowvar=False) - cov), 5 * se_cov)

    x = np.array([0.1, -0.3])
    expected = stats.multivariate_normal(theta, cov).logpdf(x)
    np.testing.assert_allclose(linear_gaussian.log_likelihood(theta, x), expected, rtol=1e-5)
