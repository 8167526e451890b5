"""Estimator methods and save/load."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse import assert_mean_within_mcse
from safetensors.numpy import save_file

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian


def test_log_prob_close_to_exact_likelihood(lg_nle):
    """KL(p || q) of the surrogate, estimated on fresh draws from the true model, is small."""
    rng = np.random.default_rng(0)
    n = 4000
    theta = rng.normal(size=(n, 2))  # the training prior
    x = theta + rng.multivariate_normal(np.zeros(2), linear_gaussian_cov(), size=n)
    exact = np.asarray(jax.vmap(linear_gaussian.log_likelihood)(theta, x), dtype=np.float64)
    approx = np.asarray(lg_nle.log_prob(x, theta), dtype=np.float64)
    diff = exact - approx  # E[diff] = E_theta KL(p(.|theta) || q(.|theta)) >= 0
    kl, se = diff.mean(), diff.std() / np.sqrt(n)
    assert kl > -4 * se  # a KL is non-negative up to Monte Carlo error
    assert kl < 0.05 + 4 * se  # a 4,000-simulation surrogate is within 0.05 nats


def linear_gaussian_cov():
    from pymc_sbi.benchmarks.tasks import LG_LIKELIHOOD_COV

    return LG_LIKELIHOOD_COV


def test_log_prob_broadcasting_and_shapes(lg_nle):
    x = np.zeros((5, 2))
    assert lg_nle.log_prob(x, np.zeros(2)).shape == (5,)
    assert lg_nle.log_prob(np.zeros(2), np.zeros((3, 1, 2))).shape == (3, 1)
    assert lg_nle.log_prob(np.zeros((4, 2)), np.zeros((3, 1, 2))).shape == (3, 4)
    single = lg_nle.log_prob(x[0], np.ones(2))
    np.testing.assert_allclose(lg_nle.log_prob(x, np.ones(2)), single, rtol=1e-6)


def test_bad_shapes_name_the_expected_shape(lg_nle):
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        lg_nle.log_prob(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"theta\[0\]"):
        lg_nle.log_prob(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="theta has shape"):
        lg_nle.sample(jax.random.key(0), np.zeros(5), 3)


def test_sample_shapes_and_moments(lg_nle):
    theta = np.array([0.5, -0.3])
    x = lg_nle.sample(jax.random.key(0), theta, 20_000)
    assert x.shape == (20_000, 2)
    assert lg_nle.sample(jax.random.key(0), np.zeros((3, 2))).shape == (3, 2)
    assert lg_nle.sample(jax.random.key(0), np.zeros((3, 2)), 4).shape == (4, 3, 2)
    # sample and log_prob describe the same density: importance-weight check.
    # E_q[f] from samples equals the integral of f q computed with log_prob on a grid.
    g = np.linspace(-2.5, 2.5, 201)
    xx, yy = np.meshgrid(g + theta[0], g + theta[1], indexing="ij")
    grid = np.stack([xx.ravel(), yy.ravel()], -1)
    dens = np.exp(np.asarray(lg_nle.log_prob(grid, theta), dtype=np.float64))
    cell = (g[1] - g[0]) ** 2
    assert dens.sum() * cell == pytest.approx(1.0, abs=0.01)
    mean_grid = (grid * dens[:, None]).sum(0) * cell
    assert_mean_within_mcse(np.asarray(x), mean_grid)  # 20,000 i.i.d. draws


def test_methods_jit_and_grad(lg_nle, x64):
    x, t0 = np.array([0.1, 0.2]), jnp.zeros(2, jnp.float32)
    f = jax.jit(lambda t: lg_nle.log_prob(x, t))
    g = jax.grad(f)(t0)
    assert g.shape == (2,) and np.all(np.isfinite(g))
    # the jitted gradient is the eager one, and central differences of the float64 copy
    # (truncation error h^2 ~ 1e-12, round-off 1e-16 / h ~ 1e-10; float32 network: ~1e-6)
    np.testing.assert_allclose(g, jax.grad(lambda t: lg_nle.log_prob(x, t))(t0), rtol=1e-6)
    e64, h = lg_nle.astype(jnp.float64), 1e-6
    fd = [(e64.log_prob(x, h * e) - e64.log_prob(x, -h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(g, np.array(fd, np.float64), rtol=1e-4, atol=1e-4)
    assert np.abs(g).max() > 0.1  # not a flat spot: the check has something to compare


def test_both_x64_settings_agree(lg_nle, no_x64):
    lp32 = np.asarray(lg_nle.log_prob(np.array([0.1, 0.2]), np.zeros(2)))
    jax.config.update("jax_enable_x64", True)
    lp64 = np.asarray(lg_nle.log_prob(np.array([0.1, 0.2]), np.zeros(2)))
    assert lp64.dtype == np.float64
    np.testing.assert_allclose(lp32, lp64, rtol=1e-5)


def test_astype_float64(lg_nle, x64):
    e64 = lg_nle.astype(jnp.float64)
    assert e64.dtype == jnp.float64
    np.testing.assert_allclose(
        e64.log_prob(np.ones(2), np.zeros(2)), lg_nle.log_prob(np.ones(2), np.zeros(2)), rtol=1e-5
    )


def test_save_load_round_trip(lg_nle, tmp_path):
    path = tmp_path / "lg.safetensors"
    lg_nle.save(path)
    loaded = ps.load(path)
    assert loaded.spec == lg_nle.spec and loaded.x_shape == lg_nle.x_shape
    assert loaded.history["epochs"] == lg_nle.history["epochs"]
    assert type(loaded.module) is type(lg_nle.module)
    x, th = np.random.default_rng(1).normal(size=(10, 2)), np.zeros(2)
    np.testing.assert_array_equal(loaded.log_prob(x, th), lg_nle.log_prob(x, th))
    key = jax.random.key(3)
    np.testing.assert_array_equal(loaded.sample(key, th, 5), lg_nle.sample(key, th, 5))


def test_load_rejects_foreign_and_corrupt_files(lg_nle, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), {"format": "pt"})
    with pytest.raises(ValueError, match=r"not a pymc_sbi\.estimator file"):
        ps.load(foreign)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 this is not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        ps.load(corrupt)
    good = tmp_path / "good.safetensors"
    lg_nle.save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ValueError):
        ps.load(truncated)
    with pytest.raises(FileNotFoundError):
        ps.load(tmp_path / "missing.safetensors")


def test_saved_file_is_json_header_plus_tensors(lg_nle, tmp_path):
    """No pickle: the header is plain JSON and the network is named by family."""
    path = tmp_path / "e.safetensors"
    lg_nle.save(path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["format"] == "pymc_sbi.estimator"
    assert json.loads(meta["network"])["family"] == "maf"
    assert b"pickle" not in raw and b"\x80\x04" not in raw[: 8 + n]
