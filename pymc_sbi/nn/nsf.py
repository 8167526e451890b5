r"""Neural spline flow: autoregressive rational-quadratic spline layers.

Each layer transforms every dimension with its own monotonic
rational-quadratic spline (see :mod:`pymc_sbi.nn.splines`) on
:math:`[-B, B]`, with identity tails outside,

.. math::

    z_i = g\bigl(u_i;\ \theta_i\bigr), \qquad
    \theta_i = (\tilde w_i, \tilde h_i, \tilde\delta_i) = \mathrm{MADE}(u_{<i}, c)
    \in \mathbb{R}^{K} \times \mathbb{R}^{K} \times \mathbb{R}^{K-1},

so the MADE emits :math:`3K - 1` numbers per dimension and the layer's
log-determinant is :math:`\sum_i \log g'(u_i; \theta_i)`.  Layers are separated
by order reversals and the base is standard normal, exactly as for
:class:`~pymc_sbi.nn.maf.MAF`.  The zero-initialised MADE output gives equal
bins with unit knot derivatives, i.e. an identity flow at init.

Inputs are z-scored upstream, so the default tail bound :math:`B = 3` covers
the bulk of the data.  Each spline is the identity outside :math:`[-B, B]`
(with zero log-determinant), so a point that lies outside the interval in
every layer is passed through unchanged and, far out, :math:`q` has
standard-normal tails.  Data whose z-scored tails are much heavier than that
(or that are not z-scored) are modelled poorly beyond :math:`\pm B`: raise
``tail_bound`` for them.

References
----------
C. Durkan, A. Bekasov, I. Murray, G. Papamakarios, "Neural Spline Flows",
NeurIPS 2019, arXiv:1906.04032.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .maf import AutoregressiveFlow
from .splines import rational_quadratic_spline, rational_quadratic_spline_inverse

__all__ = ["NSF", "nsf"]


class NSF(AutoregressiveFlow):
    r"""Conditional autoregressive rational-quadratic neural spline flow.

    Attributes
    ----------
    features, num_transforms, hidden_features, num_hidden, activation
        See :class:`~pymc_sbi.nn.maf.AutoregressiveFlow`.
    num_bins : int
        Number of spline bins :math:`K` (at least 2).
    tail_bound : float
        Half-width :math:`B` of the spline interval :math:`[-B, B]`.
    """

    num_bins: int = 10
    tail_bound: float = 3.0

    def _num_params(self) -> int:
        if self.num_bins < 2:
            raise ValueError("NSF needs num_bins >= 2")
        return 3 * self.num_bins - 1

    def _split(self, raw: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        k = self.num_bins
        return raw[..., :k], raw[..., k : 2 * k], raw[..., 2 * k :]

    def _layer_forward(self, u: jax.Array, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        z, log_det = rational_quadratic_spline(u, *self._split(raw), tail_bound=self.tail_bound)
        return z, jnp.sum(log_det, axis=-1)

    def _layer_inverse(self, u: jax.Array, raw: jax.Array) -> jax.Array:
        x, _ = rational_quadratic_spline_inverse(u, *self._split(raw), tail_bound=self.tail_bound)
        return x


def nsf(**kwargs: Any) -> NSF:
    """An :class:`NSF` with sbi-like defaults (5 transforms, 10 bins, hidden 50, B = 3).

    Keyword arguments override the fields, e.g. ``nsf(num_bins=8)``.
    """
    return NSF(**kwargs)
