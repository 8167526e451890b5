"""MAF, NSF and MDN: normalisation, log-determinants, sampling, shapes, dtypes, configs.

The networks are checked with parameters perturbed away from their (near-identity)
initialisation, so that the densities are non-trivial and non-Gaussian.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pymc_sbi.nn import (
    MAF,
    MDN,
    NSF,
    maf,
    mdn,
    network_config,
    network_from_config,
    nsf,
)

C = 2  # context dimension
CONTEXT = np.array([0.5, -1.0], dtype=np.float32)
N_SAMPLES = 20_000

SMALL = {
    "maf": lambda: MAF(num_transforms=2, hidden_features=16, activation="tanh"),
    "nsf": lambda: NSF(num_transforms=2, hidden_features=16, num_bins=6, activation="tanh"),
    "mdn": lambda: MDN(num_components=3, hidden_features=16, activation="tanh"),
}
FLOWS = ["maf", "nsf"]


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@functools.cache
def build(family, d, noise=0.3, seed=0):
    """Small network for ``d`` features; params = init + N(0, noise^2) on every leaf.

    Returns the module, the params and jitted ``log_prob(x, c)`` and ``sample(key, c)``.
    Cached, so that tests sharing a network share compilations.
    """
    module = SMALL[family]().clone(features=d)
    params = jax.jit(module.init)(jax.random.key(seed), jnp.zeros(d), jnp.zeros(C))
    # NumPy noise: drawing with jax.random would compile one program per leaf shape.
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves = [p + noise * rng.standard_normal(p.shape).astype(p.dtype) for p in leaves]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    log_prob = jax.jit(lambda x, c: module.apply(params, x, c))
    sample = jax.jit(lambda key, c: module.apply(params, key, c, method="sample"))
    return module, params, log_prob, sample


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def draw(sample, d, seed=1):
    context = jnp.broadcast_to(jnp.asarray(CONTEXT), (N_SAMPLES, C))
    x = np.asarray(sample(jax.random.key(seed), context), dtype=np.float64)
    assert x.shape == (N_SAMPLES, d) and np.all(np.isfinite(x))
    return x


def grid_density(log_prob, lo, hi, n):
    """Density on an ``n``-point-per-axis grid over the box [lo, hi] (arrays of length d)."""
    axes = [np.linspace(a, b, n) for a, b in zip(lo, hi, strict=True)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    flat = mesh.reshape(-1, len(lo)).astype(np.float32)
    ctx = np.broadcast_to(CONTEXT, (flat.shape[0], C))
    dens = np.exp(np.asarray(log_prob(flat, ctx), dtype=np.float64))
    return axes, mesh, dens.reshape(mesh.shape[:-1])


def trapezoid(values, axes):
    for ax in reversed(axes):
        values = np.trapezoid(values, ax, axis=-1)
    return float(values)


def sample_box(x):
    """Sample range padded by 25% on each side: holds the mass if samples are right."""
    lo, hi = x.min(0), x.max(0)
    pad = 0.25 * (hi - lo)
    return lo - pad, hi + pad


@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_density_2d_normalised_and_matches_samples(family):
    d = 2
    _, _, log_prob, sample = build(family, d)
    x = draw(sample, d)
    lo, hi = sample_box(x)
    axes, mesh, dens = grid_density(log_prob, lo, hi, 400)
    # The box holds the mass: the density on its boundary is negligible.
    edge = np.concatenate([dens[0], dens[-1], dens[:, 0], dens[:, -1]])
    assert edge.max() < 1e-4 * dens.max()
    z = trapezoid(dens, axes)
    assert abs(z - 1.0) < 0.01, z

    # Moments of the (grid-normalised) density vs. those of the samples, within
    # 4 Monte Carlo standard errors (the grid error is far smaller).
    p = dens / z
    mean_grid = np.array([trapezoid(p * mesh[..., i], axes) for i in range(d)])
    centred = mesh - mean_grid
    cov_grid = np.array(
        [
            [trapezoid(p * centred[..., i] * centred[..., j], axes) for j in range(d)]
            for i in range(d)
        ]
    )
    mean_s = x.mean(0)
    se_mean = x.std(0) / np.sqrt(N_SAMPLES)
    np.testing.assert_array_less(np.abs(mean_s - mean_grid), 4 * se_mean)
    xc = x - mean_s
    for i in range(d):
        for j in range(i + 1):
            prod = xc[:, i] * xc[:, j]
            se = prod.std() / np.sqrt(N_SAMPLES)
            assert abs(prod.mean() - cov_grid[i, j]) < 4 * se, (i, j)

    # Non-trivial: far (in total variation) from the moment-matched Gaussian.
    diff = mesh - mean_grid
    prec = np.linalg.inv(cov_grid)
    gauss = np.exp(-0.5 * np.einsum("...i,ij,...j->...", diff, prec, diff))
    gauss /= 2 * np.pi * np.sqrt(np.linalg.det(cov_grid))
    assert 0.5 * trapezoid(np.abs(p - gauss), axes) > 0.02


@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_density_1d_normalised_and_matches_samples(family):
    _, _, log_prob, sample = build(family, 1)
    x = draw(sample, 1)
    lo, hi = sample_box(x)
    axes, mesh, dens = grid_density(log_prob, lo, hi, 20_001)
    assert max(dens[0], dens[-1]) < 1e-4 * dens.max()
    z = trapezoid(dens, axes)
    # 20k grid points in 1-D: the quadrature error is negligible, the edges hold < 1e-4.
    assert abs(z - 1.0) < 1e-3, z
    mean_grid = trapezoid(dens * mesh[..., 0], axes) / z
    var_grid = trapezoid(dens * (mesh[..., 0] - mean_grid) ** 2, axes) / z
    assert abs(x.mean() - mean_grid) < 4 * x.std() / np.sqrt(N_SAMPLES)
    sq = (x[:, 0] - x.mean()) ** 2
    assert abs(sq.mean() - var_grid) < 4 * sq.std() / np.sqrt(N_SAMPLES)


def kde_proposal(centres, n, rng, defensive=0.2):
    """Draw ``n`` points from, and evaluate the log density of, a Gaussian KDE on
    ``centres`` mixed with a wide Gaussian (weight ``defensive``) for heavy tails."""
    m, d = centres.shape
    mean, cov = centres.mean(0), np.cov(centres.T)
    band = m ** (-2.0 / (d + 4)) * cov  # Scott's rule
    chol = np.linalg.cholesky(band)
    n_wide = rng.binomial(n, defensive)
    y = np.concatenate(
        [
            centres[rng.integers(m, size=n - n_wide)]
            + rng.standard_normal((n - n_wide, d)) @ chol.T,
            mean + 2.0 * rng.standard_normal((n_wide, d)) @ np.linalg.cholesky(cov).T,
        ]
    )
    # KDE kernels are N(c, band): whiten by the bandwidth's Cholesky factor.
    inv_chol = np.linalg.inv(chol)
    yw, cw = y @ inv_chol.T, centres @ inv_chol.T
    log_det = np.sum(np.log(np.diag(chol)))
    sq = (yw**2).sum(1)[:, None] + (cw**2).sum(1)[None, :] - 2.0 * yw @ cw.T
    log_kde = np.logaddexp.reduce(-0.5 * sq, axis=1) - np.log(m)
    log_kde -= 0.5 * d * np.log(2 * np.pi) + log_det
    wide = 4.0 * cov
    diff = y - mean
    log_wide = -0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(wide), diff)
    log_wide -= 0.5 * np.linalg.slogdet(2 * np.pi * wide)[1]
    log_r = np.logaddexp(np.log1p(-defensive) + log_kde, np.log(defensive) + log_wide)
    return y, log_r


@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_density_3d_importance_sampling(family):
    # In 3-D a fine grid is costly: estimate Z = E_r[q / r] and E_q[x] = E_r[x q / r]
    # by importance sampling and compare within 4 standard errors.  The proposal r is
    # a KDE on 500 of the model's samples (plus a wide defensive component); any fixed
    # proper r gives unbiased estimates, a good one just makes them precise.
    # Perturbation 0.2 here: at 0.3 the 3-D NSF grows density spikes (~100x the KDE)
    # that would need a far larger n for a precise estimate.
    d = 3
    _, _, log_prob, sample = build(family, d, noise=0.2)
    x = draw(sample, d)
    rng = np.random.default_rng(0)
    n = 50_000
    y, log_r = kde_proposal(x[:500], n, rng)
    ctx = np.broadcast_to(CONTEXT, (n, C))
    w = np.exp(np.asarray(log_prob(y.astype(np.float32), ctx), dtype=np.float64) - log_r)
    z, se_z = w.mean(), w.std() / np.sqrt(n)
    assert se_z < 0.01  # the check has power
    assert abs(z - 1.0) < 4 * se_z, (z, se_z)
    wx = w[:, None] * y
    se = np.sqrt(wx.var(0) / n + x.var(0) / N_SAMPLES)
    np.testing.assert_array_less(np.abs(wx.mean(0) - x.mean(0)), 4 * se)


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("family", FLOWS)
def test_flow_log_det_and_inverse(family, d):
    module, params, _, _ = build(family, d)
    rng = np.random.default_rng(2)
    x = 1.5 * normal(rng, 64, d)  # some points beyond the spline bound
    ctx = normal(rng, 64, C)
    transform = lambda x, c: module.apply(params, x, c, method="transform")
    z, log_det = jax.jit(transform)(x, ctx)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda x, c: transform(x, c)[0])))(x, ctx)
    sign, log_abs = jnp.linalg.slogdet(jac)
    assert np.all(np.asarray(sign) != 0)
    np.testing.assert_allclose(log_det, log_abs, rtol=1e-4, atol=1e-4)
    log_prob = jax.jit(module.apply)(params, x, ctx)
    base = -0.5 * jnp.sum(z**2, -1) - 0.5 * d * np.log(2 * np.pi)
    np.testing.assert_allclose(log_prob, base + log_det, rtol=1e-5, atol=1e-5)
    x_back = jax.jit(lambda z, c: module.apply(params, z, c, method="inverse"))(z, ctx)
    np.testing.assert_allclose(x_back, x, atol=2e-4)


@pytest.mark.parametrize("family", FLOWS)
def test_untrained_flow_is_standard_normal(family):
    module = SMALL[family]().clone(features=3)
    x, ctx = normal(np.random.default_rng(0), 10, 3), jnp.ones((10, C))
    params = jax.jit(module.init)(jax.random.key(1), x, ctx)
    expected = -0.5 * jnp.sum(x**2, -1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(jax.jit(module.apply)(params, x, ctx), expected, atol=1e-5)


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_shapes_vmap_and_broadcasting(family, d):
    module, params, log_prob, sample = build(family, d)
    rng = np.random.default_rng(0)
    x, ctx = normal(rng, 4, 5, d), normal(rng, 4, 5, C)
    lp = log_prob(x, ctx)
    assert lp.shape == (4, 5) and lp.dtype == jnp.float32
    assert log_prob(x[0, 0], ctx[0, 0]).shape == ()
    np.testing.assert_allclose(log_prob(x[1, 2], ctx[1, 2]), lp[1, 2], rtol=1e-5, atol=1e-5)
    vmapped = jax.jit(jax.vmap(jax.vmap(lambda x, c: module.apply(params, x, c))))(x, ctx)
    np.testing.assert_allclose(vmapped, lp, rtol=1e-5, atol=1e-5)
    # One context broadcast against many x.
    lp_bcast = log_prob(x[0], ctx[0, 0])
    assert lp_bcast.shape == (5,)
    np.testing.assert_allclose(lp_bcast[3], log_prob(x[0, 3], ctx[0, 0]), rtol=1e-5, atol=1e-5)
    key = jax.random.key(3)
    draws = sample(key, ctx)
    assert draws.shape == (4, 5, d) and draws.dtype == jnp.float32
    assert sample(key, ctx[0, 0]).shape == (d,)
    keys = jax.random.split(key, 4)
    assert jax.vmap(sample)(keys, ctx).shape == (4, 5, d)
    with pytest.raises(ValueError, match="features"):
        module.apply(params, jnp.ones((3, d + 1)), jnp.ones((3, C)))


@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_gradients_finite(family):
    module, params, _, _ = build(family, 2)
    rng = np.random.default_rng(0)
    x, ctx = 2.0 * normal(rng, 32, 2), normal(rng, 32, C)
    loss = jax.jit(lambda p: module.apply(p, x, ctx).mean())
    grads = jax.jit(jax.grad(loss))(params)
    for g in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(g))
    # Values: the derivative along a random unit direction v of all parameters equals a
    # central difference of the loss (float32, step h = 1e-2: truncation ~h^2 L3 ~ 1e-4 with L3
    # the third derivative, round-off ~1e-7 |L| / h ~ 1e-5)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    v = [rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
    norm = np.sqrt(sum(float(np.sum(u**2)) for u in v))
    v = [u / norm for u in v]
    flat_grads = jax.tree_util.tree_leaves(grads)
    along = float(sum(np.sum(np.asarray(g) * u) for g, u in zip(flat_grads, v, strict=True)))
    h = 1e-2

    def shifted(sign):
        moved = [p + sign * h * u for p, u in zip(leaves, v, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, moved)

    fd = (float(loss(shifted(1))) - float(loss(shifted(-1)))) / (2 * h)
    assert abs(fd - along) < 1e-2 * abs(along) + 1e-3, (along, fd)
    assert abs(along) > 1e-2  # a direction the loss depends on


@pytest.mark.parametrize("family", ["maf", "nsf", "mdn"])
def test_float64_inputs_compute_in_float64(family, x64):
    module, params, _, _ = build(family, 2)
    rng = np.random.default_rng(0)
    x32, ctx32 = jnp.asarray(normal(rng, 8, 2)), jnp.asarray(normal(rng, 8, C))
    apply = jax.jit(module.apply, static_argnames="method")
    lp32 = apply(params, x32, ctx32)
    assert lp32.dtype == jnp.float32  # float32 params do not force a dtype
    x64_, ctx64 = x32.astype(jnp.float64), ctx32.astype(jnp.float64)
    lp64 = apply(params, x64_, ctx64)
    assert lp64.dtype == jnp.float64
    np.testing.assert_allclose(lp64, lp32, rtol=1e-4, atol=1e-4)
    draws = apply(params, jax.random.key(2), ctx64, method="sample")
    assert draws.dtype == jnp.float64 and draws.shape == (8, 2)
    assert apply(params, jax.random.key(2), ctx32, method="sample").dtype == jnp.float32
    if family in FLOWS:
        z, _ = apply(params, x64_, ctx64, method="transform")
        x_back = apply(params, z, ctx64, method="inverse")
        np.testing.assert_allclose(x_back, x64_, atol=1e-10)


@pytest.mark.parametrize("factory", [maf, nsf, mdn])
def test_config_round_trip(factory):
    module = factory(hidden_features=7, activation="gelu").clone(features=3)
    config = network_config(module)
    assert set(config) == {"family", "config"}
    assert "parent" not in config["config"] and "name" not in config["config"]
    assert config["config"]["features"] == 3
    rebuilt = network_from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(module)
    assert network_config(rebuilt) == config
    x, ctx = jnp.ones((2, 3)), jnp.ones((2, C))
    params = jax.jit(module.init)(jax.random.key(0), x, ctx)
    np.testing.assert_array_equal(
        jax.jit(module.apply)(params, x, ctx), jax.jit(rebuilt.apply)(params, x, ctx)
    )


def test_factory_defaults():
    assert network_config(maf())["config"] == {
        "features": 0,
        "num_transforms": 5,
        "hidden_features": 50,
        "num_hidden": 2,
        "activation": "relu",
        "min_scale": 1e-3,
    }
    assert nsf().num_bins == 10 and nsf().tail_bound == 3.0 and nsf().num_transforms == 5
    assert mdn().num_components == 10 and mdn().hidden_features == 50


def test_config_errors():
    with pytest.raises(ValueError, match="unknown network family"):
        network_from_config({"family": "realnvp", "config": {}})
    with pytest.raises(ValueError, match="unknown fields"):
        network_from_config({"family": "maf", "config": {"bins": 3}})
    with pytest.raises(ValueError, match="clone"):
        maf().init(jax.random.key(0), jnp.ones(2), jnp.ones(C))
