r"""Monotonic rational-quadratic splines (Durkan et al., 2019).

A rational-quadratic (RQ) spline is a strictly increasing, continuously
differentiable map of the interval :math:`[-B, B]` onto itself, built from
:math:`K` bins.  Outside the interval it is the identity ("linear tails"), and
the derivatives at :math:`\pm B` are fixed to 1 so that the map is
:math:`C^1` on the whole real line.

Knots and derivatives
---------------------
Unconstrained parameters :math:`(\tilde w, \tilde h, \tilde\delta)` of sizes
:math:`(K, K, K-1)` are mapped to bin widths, bin heights and interior knot
derivatives by

.. math::

    w_k = 2B\,\bigl(w_{\min} + (1 - K w_{\min})\,\mathrm{softmax}(\tilde w)_k\bigr), \qquad
    h_k = 2B\,\bigl(h_{\min} + (1 - K h_{\min})\,\mathrm{softmax}(\tilde h)_k\bigr),

.. math::

    \delta_k = \delta_{\min} + \mathrm{softplus}\bigl(\tilde\delta_k + c\bigr), \quad
    c = \log\bigl(e^{1 - \delta_{\min}} - 1\bigr), \qquad \delta_0 = \delta_K = 1,

so that all-zero parameters give equal bins with unit derivatives, i.e. the
identity map (the constant :math:`c` is what makes an untrained spline flow
start at the identity).  The knots are :math:`x^{(0)} = -B`,
:math:`x^{(k)} = -B + \sum_{j<k} w_j` (likewise :math:`y^{(k)}` from the
heights), with :math:`x^{(K)} = y^{(K)} = B` set exactly.

Forward map (eqs. 4 and 5 of the paper)
---------------------------------------
For :math:`x` in bin :math:`k`, with :math:`s_k = h_k / w_k` and
:math:`\xi = (x - x^{(k)}) / w_k \in [0, 1]`,

.. math::

    y = y^{(k)} + \frac{h_k\,[s_k \xi^2 + \delta_k \xi(1-\xi)]}
                       {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)},

.. math::

    \frac{dy}{dx} = \frac{s_k^2\,[\delta_{k+1}\xi^2 + 2 s_k \xi(1-\xi)
                                 + \delta_k (1-\xi)^2]}
                         {[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)]^2}.

Inverse map (eqs. 6–8 of the paper)
-----------------------------------
Given :math:`y` in bin :math:`k`, :math:`\xi` is the root in :math:`[0, 1]` of
:math:`a\xi^2 + b\xi + c = 0` with

.. math::

    a &= h_k (s_k - \delta_k) + (y - y^{(k)})(\delta_{k+1} + \delta_k - 2 s_k), \\
    b &= h_k \delta_k - (y - y^{(k)})(\delta_{k+1} + \delta_k - 2 s_k), \\
    c &= -s_k (y - y^{(k)}),

computed in the cancellation-free form :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`
and :math:`x = x^{(k)} + \xi w_k`; :math:`\log|dx/dy| = -\log|dy/dx|`
evaluated at that :math:`x`.

References
----------
C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
NeurIPS 2019, arXiv:1906.04032.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_DERIVATIVE",
    "rational_quadratic_spline",
    "rational_quadratic_spline_inverse",
    "spline_knots",
]

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def _knots(unnormalized: jax.Array, tail_bound: float, min_size: float) -> jax.Array:
    """Knot positions ``(..., K + 1)`` from unnormalised bin sizes ``(..., K)``."""
    num_bins = unnormalized.shape[-1]
    if min_size * num_bins >= 1.0:
        raise ValueError(f"minimal bin size {min_size} too large for {num_bins} bins")
    sizes = min_size + (1.0 - min_size * num_bins) * jax.nn.softmax(unnormalized, axis=-1)
    cum = jnp.cumsum(sizes, axis=-1)
    knots = 2.0 * tail_bound * cum - tail_bound
    # Pin both ends exactly, so that the spline maps [-B, B] onto itself.
    lower = jnp.full((*knots.shape[:-1], 1), -tail_bound, dtype=knots.dtype)
    return jnp.concatenate([lower, knots[..., :-1], -lower], axis=-1)


def spline_knots(
    unnormalized_widths: jax.Array,
    unnormalized_heights: jax.Array,
    unnormalized_derivatives: jax.Array,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Knots :math:`x^{(k)}`, :math:`y^{(k)}` and derivatives :math:`\delta_k`.

    Parameters
    ----------
    unnormalized_widths, unnormalized_heights : Array, shape ``(..., K)``
    unnormalized_derivatives : Array, shape ``(..., K - 1)``
        Interior-knot derivatives before the positive map (see module docs).
    tail_bound : float
        :math:`B`; the spline acts on :math:`[-B, B]`.
    min_bin_width, min_bin_height, min_derivative : float
        Lower bounds that keep bins and slopes away from zero.

    Returns
    -------
    x_knots, y_knots, derivatives : Array, shape ``(..., K + 1)``
        Boundary derivatives are exactly 1.
    """
    num_bins = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != num_bins:
        raise ValueError("widths and heights must have the same number of bins")
    if unnormalized_derivatives.shape[-1] != num_bins - 1:
        raise ValueError(f"expected {num_bins - 1} interior derivatives for {num_bins} bins")
    x_knots = _knots(unnormalized_widths, tail_bound, min_bin_width)
    y_knots = _knots(unnormalized_heights, tail_bound, min_bin_height)
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + jax.nn.softplus(unnormalized_derivatives + shift)
    ones = jnp.ones((*inner.shape[:-1], 1), dtype=inner.dtype)
    derivatives = jnp.concatenate([ones, inner, ones], axis=-1)
    return x_knots, y_knots, derivatives


def _bin_parameters(value: jax.Array, knots: jax.Array, *others: jax.Array) -> tuple:
    """Locate ``value`` among ``knots`` and gather per-bin quantities.

    Returns the bin's lower/upper knot of ``knots`` and of each array in
    ``others`` (all of shape ``(..., K + 1)``).
    """
    # Bin k holds knots[k] <= value < knots[k + 1]; interior knots only, so values at
    # (or, after clamping, beyond) the ends fall into the first/last bin.
    idx = jnp.sum(value[..., None] >= knots[..., 1:-1], axis=-1)
    # One-hot selection instead of a gather: K is small, and it compiles faster.
    onehot = jax.nn.one_hot(idx, knots.shape[-1] - 1, dtype=knots.dtype)
    out = []
    for arr in (knots, *others):
        out.append(jnp.sum(onehot * arr[..., :-1], axis=-1))
        out.append(jnp.sum(onehot * arr[..., 1:], axis=-1))
    return tuple(out)


def rational_quadratic_spline(
    x: jax.Array,
    unnormalized_widths: jax.Array,
    unnormalized_heights: jax.Array,
    unnormalized_derivatives: jax.Array,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array]:
    r"""Elementwise forward RQ spline :math:`y = g(x)` with :math:`\log|dy/dx|`.

    Parameters
    ----------
    x : Array, shape ``(...,)``
        Inputs; each element has its own spline parameters.
    unnormalized_widths, unnormalized_heights : Array, shape ``(..., K)``
    unnormalized_derivatives : Array, shape ``(..., K - 1)``
    tail_bound, min_bin_width, min_bin_height, min_derivative : float
        See :func:`spline_knots`.

    Returns
    -------
    y : Array, shape ``(...,)``
    log_abs_det : Array, shape ``(...,)``
        :math:`\log|dy/dx|`; exactly 0 outside :math:`[-B, B]`.
    """
    xk, yk, dk = spline_knots(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        tail_bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )
    inside = (x >= -tail_bound) & (x <= tail_bound)
    # Clamp so that the unused branch of `where` stays finite (no NaN gradients).
    xc = jnp.clip(x, -tail_bound, tail_bound)
    x0, x1, y0, y1, d0, d1 = _bin_parameters(xc, xk, yk, dk)
    w, h = x1 - x0, y1 - y0
    s = h / w
    xi = jnp.clip((xc - x0) / w, 0.0, 1.0)
    t = xi * (1.0 - xi)
    denom = s + (d1 + d0 - 2.0 * s) * t
    y = y0 + h * (s * xi**2 + d0 * t) / denom
    deriv_num = s**2 * (d1 * xi**2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2)
    log_det = jnp.log(deriv_num) - 2.0 * jnp.log(denom)
    return jnp.where(inside, y, x), jnp.where(inside, log_det, jnp.zeros_like(log_det))


def rational_quadratic_spline_inverse(
    y: jax.Array,
    unnormalized_widths: jax.Array,
    unnormalized_heights: jax.Array,
    unnormalized_derivatives: jax.Array,
    tail_bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array]:
    r"""Elementwise inverse RQ spline :math:`x = g^{-1}(y)` with :math:`\log|dx/dy|`.

    Parameters
    ----------
    y : Array, shape ``(...,)``
    unnormalized_widths, unnormalized_heights : Array, shape ``(..., K)``
    unnormalized_derivatives : Array, shape ``(..., K - 1)``
    tail_bound, min_bin_width, min_bin_height, min_derivative : float
        Must equal those used in the forward direction.

    Returns
    -------
    x : Array, shape ``(...,)``
    log_abs_det : Array, shape ``(...,)``
        :math:`\log|dx/dy| = -\log|dy/dx|` at :math:`x`; 0 outside :math:`[-B, B]`.
    """
    xk, yk, dk = spline_knots(
        unnormalized_widths,
        unnormalized_heights,
        unnormalized_derivatives,
        tail_bound,
        min_bin_width,
        min_bin_height,
        min_derivative,
    )
    inside = (y >= -tail_bound) & (y <= tail_bound)
    yc = jnp.clip(y, -tail_bound, tail_bound)
    y0, y1, x0, x1, d0, d1 = _bin_parameters(yc, yk, xk, dk)
    w, h = x1 - x0, y1 - y0
    s = h / w
    dy = yc - y0
    curv = d1 + d0 - 2.0 * s
    a = h * (s - d0) + dy * curv
    b = h * d0 - dy * curv
    c = -s * dy
    disc = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
    # c <= 0 and a + b = h s > 0, so -b - sqrt(disc) < 0 (never zero): no cancellation.
    xi = jnp.clip(2.0 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
    x = x0 + xi * w
    t = xi * (1.0 - xi)
    denom = s + curv * t
    deriv_num = s**2 * (d1 * xi**2 + 2.0 * s * t + d0 * (1.0 - xi) ** 2)
    log_det = 2.0 * jnp.log(denom) - jnp.log(deriv_num)
    return jnp.where(inside, x, y), jnp.where(inside, log_det, jnp.zeros_like(log_det))
