"""Rational-quadratic spline: inverse, log-determinant, monotonicity, tails."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pymc_sbi.nn import splines
from pymc_sbi.nn.splines import spline_knots

B = 3.0
# Jitted once: op-by-op dispatch of the many small ops would dominate the runtime.
rational_quadratic_spline = jax.jit(
    splines.rational_quadratic_spline, static_argnames=("tail_bound",)
)
rational_quadratic_spline_inverse = jax.jit(
    splines.rational_quadratic_spline_inverse, static_argnames=("tail_bound",)
)
EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def x64():
    """Enable float64 for one test and restore the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def random_params(key, shape, num_bins, scale=1.5, dtype=jnp.float32):
    kw, kh, kd = jax.random.split(key, 3)
    w = scale * jax.random.normal(kw, (*shape, num_bins), dtype)
    h = scale * jax.random.normal(kh, (*shape, num_bins), dtype)
    d = scale * jax.random.normal(kd, (*shape, num_bins - 1), dtype)
    return w, h, d


def test_knots_cover_interval_with_unit_boundary_slopes():
    w, h, d = random_params(jax.random.key(0), (7,), 6)
    xk, yk, dk = spline_knots(w, h, d, tail_bound=B)
    for knots in (xk, yk):
        np.testing.assert_array_equal(knots[:, 0], -B)
        np.testing.assert_array_equal(knots[:, -1], B)
        assert np.all(np.diff(knots, axis=-1) > 0)
    np.testing.assert_array_equal(dk[:, [0, -1]], 1.0)
    assert np.all(dk > 0)


def test_zero_parameters_give_identity():
    x = jnp.linspace(-5.0, 5.0, 101)
    zeros = jnp.zeros((101, 8)), jnp.zeros((101, 8)), jnp.zeros((101, 7))
    y, log_det = rational_quadratic_spline(x, *zeros, tail_bound=B)
    # Equal bins and unit slopes: y = x up to float32 rounding of the knots.
    np.testing.assert_allclose(y, x, atol=2e-6)
    np.testing.assert_allclose(log_det, 0.0, atol=2e-6)


@pytest.mark.parametrize("num_bins", [2, 5, 10])
def test_inverse_round_trip_inside_and_outside(num_bins):
    n = 401
    x = jnp.linspace(-6.0, 6.0, n)  # half of the points lie in the linear tails
    params = random_params(jax.random.key(num_bins), (n,), num_bins)
    y, log_det = rational_quadratic_spline(x, *params, tail_bound=B)
    x_back, log_det_inv = rational_quadratic_spline_inverse(y, *params, tail_bound=B)
    # float32: y carries a few ulps of B of rounding, which the inverse divides by the
    # local slope dy/dx (as small as min_derivative); bound the error by that.
    slope = np.exp(np.asarray(log_det, np.float64))
    bound = 16 * EPS32 * B * (1.0 + 1.0 / slope)
    assert np.all(np.abs(np.asarray(x_back) - np.asarray(x)) <= bound)
    # At the same point the two log-determinants are exact negatives (up to rounding).
    _, log_det_back = rational_quadratic_spline(x_back, *params, tail_bound=B)
    np.testing.assert_allclose(log_det_inv, -log_det_back, atol=1e-4)
    y_again, _ = rational_quadratic_spline(x_back, *params, tail_bound=B)
    np.testing.assert_allclose(y_again, y, atol=16 * EPS32 * B)

    outside = np.abs(np.asarray(x)) > B
    np.testing.assert_array_equal(np.asarray(y)[outside], np.asarray(x)[outside])
    np.testing.assert_array_equal(np.asarray(log_det)[outside], 0.0)
    np.testing.assert_array_equal(np.asarray(x_back)[outside], np.asarray(x)[outside])
    np.testing.assert_array_equal(np.asarray(log_det_inv)[outside], 0.0)
    assert np.all(np.abs(np.asarray(y)[~outside]) <= B)


def test_round_trip_float64_is_exact_to_rounding(x64):
    n = 2001
    x = jnp.linspace(-4.0, 4.0, n, dtype=jnp.float64)
    params = random_params(jax.random.key(3), (n,), 8, dtype=jnp.float64)
    y, log_det = rational_quadratic_spline(x, *params, tail_bound=B)
    assert y.dtype == log_det.dtype == jnp.float64
    x_back, log_det_inv = rational_quadratic_spline_inverse(y, *params, tail_bound=B)
    np.testing.assert_allclose(x_back, x, atol=1e-11)
    np.testing.assert_allclose(log_det_inv, -log_det, atol=1e-9)


@pytest.mark.parametrize("num_bins", [3, 8])
def test_log_det_matches_autodiff(x64, num_bins):
    n = 301
    x = jnp.linspace(-3.5, 3.5, n, dtype=jnp.float64)
    params = random_params(jax.random.key(10 + num_bins), (n,), num_bins, dtype=jnp.float64)

    def forward(xi, w, h, d):
        return rational_quadratic_spline(xi, w, h, d, tail_bound=B)[0]

    def inverse(yi, w, h, d):
        return rational_quadratic_spline_inverse(yi, w, h, d, tail_bound=B)[0]

    y, log_det = rational_quadratic_spline(x, *params, tail_bound=B)
    dydx = jax.jit(jax.vmap(jax.grad(forward)))(x, *params)
    np.testing.assert_allclose(log_det, np.log(np.abs(dydx)), rtol=1e-9, atol=1e-9)
    dxdy = jax.jit(jax.vmap(jax.jacfwd(inverse)))(y, *params)
    _, log_det_inv = rational_quadratic_spline_inverse(y, *params, tail_bound=B)
    np.testing.assert_allclose(log_det_inv, np.log(np.abs(dxdy)), rtol=1e-9, atol=1e-9)


def test_log_det_matches_autodiff_float32():
    n = 201
    x = jnp.linspace(-3.5, 3.5, n)
    params = random_params(jax.random.key(5), (n,), 6)
    f = lambda xi, w, h, d: rational_quadratic_spline(xi, w, h, d, tail_bound=B)[0]
    dydx = jax.jit(jax.vmap(jax.grad(f)))(x, *params)
    _, log_det = rational_quadratic_spline(x, *params, tail_bound=B)
    np.testing.assert_allclose(log_det, np.log(dydx), rtol=1e-4, atol=1e-4)


def test_strictly_monotonic_float64(x64):
    # One spline (shared parameters) on a fine grid through both tails; float64, so
    # that steps of slope * 4e-4 (slope >= min_derivative = 1e-3) are resolved.
    x = jnp.linspace(-4.0, 4.0, 20001, dtype=jnp.float64)
    w, h, d = random_params(jax.random.key(7), (), 10, scale=2.0, dtype=jnp.float64)
    bcast = lambda a: jnp.broadcast_to(a, (x.shape[0], a.shape[-1]))
    y, _ = rational_quadratic_spline(x, bcast(w), bcast(h), bcast(d), tail_bound=B)
    assert np.all(np.diff(np.asarray(y)) > 0)
    xx, _ = rational_quadratic_spline_inverse(x, bcast(w), bcast(h), bcast(d), tail_bound=B)
    assert np.all(np.diff(np.asarray(xx)) > 0)


def test_continuous_with_continuous_slope_at_knots(x64):
    # Discontinuities could only sit at the knots (incl. the tail bounds +-B):
    # there, values and slopes from both sides must meet the knot values.
    w, h, d = random_params(jax.random.key(9), (), 7, scale=2.0, dtype=jnp.float64)
    xk, yk, dk = spline_knots(w, h, d, tail_bound=B)
    delta = 1e-9
    pts = jnp.concatenate([xk - delta, xk + delta])
    bcast = lambda a: jnp.broadcast_to(a, (pts.shape[0], a.shape[-1]))
    y, log_det = rational_quadratic_spline(pts, bcast(w), bcast(h), bcast(d), tail_bound=B)
    n = xk.shape[0]
    for side in (slice(0, n), slice(n, 2 * n)):
        # |y(x_k +- delta) - y_k| <= slope * delta, slopes here are < 1e3.
        np.testing.assert_allclose(y[side], yk, atol=1e3 * delta)
        # Slope continuity; the one-sided slopes differ from d_k by O(curvature * delta).
        np.testing.assert_allclose(jnp.exp(log_det[side]), dk, rtol=1e-5)


def test_monotonic_float32():
    x = jnp.linspace(-4.0, 4.0, 20001)
    w, h, d = random_params(jax.random.key(8), (), 10, scale=2.0)
    bcast = lambda a: jnp.broadcast_to(a, (x.shape[0], a.shape[-1]))
    y, _ = rational_quadratic_spline(x, bcast(w), bcast(h), bcast(d), tail_bound=B)
    # Where the slope is ~1e-3 a step of 4e-4 is below one ulp, so only non-decreasing.
    assert np.all(np.diff(np.asarray(y)) >= 0)
    assert float(y[-1] - y[0]) > 0


def test_gradients_are_finite_everywhere():
    x = jnp.array([-10.0, -B, -2.999, 0.0, 1e-7, 2.999, B, 10.0])
    params = random_params(jax.random.key(11), (x.shape[0],), 5)

    def loss(x, w, h, d):
        y, ld = rational_quadratic_spline(x, w, h, d, tail_bound=B)
        xb, _ = rational_quadratic_spline_inverse(y, w, h, d, tail_bound=B)
        return jnp.sum(y + ld + xb)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, *params)
    for g in grads:
        assert np.all(np.isfinite(g))
    # Values, element by element (the spline acts on each x on its own): dy/dx = exp(ld) by
    # definition of the log-determinant, d inverse(y(x))/dx = 1, and in the identity tails
    # (x = +-10) the loss is y + 0 + x = 2 x, independent of the parameters.
    _, ld = rational_quadratic_spline(x, *params, tail_bound=B)
    dy = jax.grad(lambda x: jnp.sum(rational_quadratic_spline(x, *params, tail_bound=B)[0]))(x)
    inside = np.abs(np.asarray(x)) != B  # at the knots +-B the derivative is one-sided
    np.testing.assert_allclose(dy[inside], np.exp(ld)[inside], rtol=1e-5)

    def round_trip(x):
        y, _ = rational_quadratic_spline(x, *params, tail_bound=B)
        return jnp.sum(rational_quadratic_spline_inverse(y, *params, tail_bound=B)[0])

    np.testing.assert_allclose(jax.grad(round_trip)(x)[inside], 1.0, rtol=1e-4)
    tails = np.abs(np.asarray(x)) > B
    np.testing.assert_array_equal(grads[0][tails], 2.0)
    for g in grads[1:]:
        np.testing.assert_array_equal(g[tails], 0.0)


def test_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="interior derivatives"):
        spline_knots(jnp.zeros(4), jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="same number of bins"):
        spline_knots(jnp.zeros(4), jnp.zeros(5), jnp.zeros(3))
