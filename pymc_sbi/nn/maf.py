r"""Masked autoregressive flow (Papamakarios et al., 2017) and its shared base.

A conditional autoregressive flow maps data :math:`x \in \mathbb{R}^d` to a
standard-normal variable :math:`z = T(x; c)` through :math:`L` layers,

.. math::

    x = u_0 \xrightarrow{f_1} u_1 \xrightarrow{R} \cdots \xrightarrow{R}
    u_{L-1} \xrightarrow{f_L} u_L = z,

where :math:`R` reverses the order of the dimensions and each :math:`f_l` is
an autoregressive elementwise bijection whose parameters for dimension
:math:`i` come from a :class:`~pymc_sbi.nn.made.MADE` applied to
:math:`(u_{l-1, <i}, c)`.  The density is

.. math::

    \log q(x \mid c) = \sum_{i=1}^d \log\mathcal{N}(z_i; 0, 1)
        + \sum_{l=1}^{L} \log\bigl|\det \partial f_l / \partial u_{l-1}\bigr|,

computed in one pass per layer.  Sampling inverts each layer dimension by
dimension (``d`` MADE passes per layer).

For the MAF the layer is affine, :math:`u_{l,i} = (u_{l-1,i} - \mu_i) / \sigma_i`
with :math:`\sigma_i = \sigma_{\min} + \mathrm{softplus}(\tilde\sigma_i + c_0)`
(see :func:`~pymc_sbi.nn.made.unit_softplus`), so that its log-determinant is
:math:`-\sum_i \log\sigma_i`.  The MADE output layer is zero-initialised, so an
untrained flow is exactly the identity and :math:`q(\cdot \mid c)` is standard
normal.

References
----------
G. Papamakarios, T. Pavlakou, I. Murray, "Masked Autoregressive Flow for
Density Estimation", NeurIPS 2017, arXiv:1705.07057.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .made import MADE, compute_dtype, prepare_inputs, unit_softplus

__all__ = ["MAF", "AutoregressiveFlow", "maf", "standard_normal_log_prob"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    r""":math:`\sum_i \log\mathcal{N}(z_i; 0, 1)` over the last axis."""
    return jnp.sum(-0.5 * z**2 - _HALF_LOG_2PI, axis=-1)


class AutoregressiveFlow(nn.Module):
    """Base of the conditional autoregressive flows (:class:`MAF`, :class:`~.nsf.NSF`).

    Subclasses define the number of MADE outputs per dimension and the layer
    bijection in both directions.

    Attributes
    ----------
    features : int
        Dimension ``d`` of the modelled variable (0 = set later via
        ``module.clone(features=d)``; must be set before ``init``).
    num_transforms : int
        Number of autoregressive layers ``L``.
    hidden_features : int
        Width of the MADE hidden layers.
    num_hidden : int
        Number of MADE hidden layers.
    activation : str
        MADE activation name (``"relu"``, ``"tanh"``, ``"gelu"``, ``"silu"``, ``"elu"``).
    """

    features: int = 0
    num_transforms: int = 5
    hidden_features: int = 50
    num_hidden: int = 2
    activation: str = "relu"

    # -- to be provided by subclasses -------------------------------------
    def _num_params(self) -> int:
        raise NotImplementedError

    def _layer_forward(self, u: jax.Array, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Map ``u`` to the next layer; return it and the per-sample log-det."""
        raise NotImplementedError

    def _layer_inverse(self, u: jax.Array, raw: jax.Array) -> jax.Array:
        """Invert one layer elementwise, given MADE outputs ``raw``."""
        raise NotImplementedError

    # -- shared machinery -------------------------------------------------
    def setup(self) -> None:
        """Build the transforms (Flax calls this lazily)."""
        if self.features < 1:
            raise ValueError(
                f"{type(self).__name__}.features is {self.features}; set the data dimension "
                "with module.clone(features=d) before init"
            )
        if self.num_transforms < 1:
            raise ValueError("num_transforms must be >= 1")
        self.mades = [
            MADE(
                features=self.features,
                num_params=self._num_params(),
                hidden_features=self.hidden_features,
                num_hidden=self.num_hidden,
                activation=self.activation,
                zero_init_output=True,
            )
            for _ in range(self.num_transforms)
        ]

    def _check(self, x: jax.Array) -> None:
        if x.shape[-1] != self.features:
            raise ValueError(
                f"{type(self).__name__} has features={self.features}, got x of shape {x.shape}"
            )

    def transform(self, x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""Data to noise: ``(z, log|det dz/dx|)``, each ``(..., d)`` and ``(...,)``.

        ``x`` has shape ``(..., d)`` and ``context`` shape ``(..., c)``.
        """
        x, context = prepare_inputs(x, context)
        self._check(x)
        z = x
        log_det = jnp.zeros(x.shape[:-1], dtype=x.dtype)
        for layer, made in enumerate(self.mades):
            z, ld = self._layer_forward(z, made(z, context))
            log_det = log_det + ld
            if layer < self.num_transforms - 1:
                z = z[..., ::-1]
        return z, log_det

    def inverse(self, z: jax.Array, context: jax.Array) -> jax.Array:
        r"""Noise to data, :math:`x = T^{-1}(z; c)`.

        Each layer is inverted by the fixed-point sweep
        :math:`v \leftarrow f^{-1}(u; \theta(v_{<i}, c))`, repeated ``d`` times
        from :math:`v = u`: after sweep :math:`k` the first :math:`k` coordinates
        are exact, so ``d`` sweeps give the exact inverse.
        """
        u, context = prepare_inputs(z, context)
        self._check(u)
        for layer in reversed(range(self.num_transforms)):
            if layer < self.num_transforms - 1:
                u = u[..., ::-1]
            made = self.mades[layer]
            if self.is_initializing():
                made(u, context)  # create the parameters outside the loop

            def sweep(_: Any, v: jax.Array, u: jax.Array = u, made: MADE = made) -> jax.Array:
                return self._layer_inverse(u, made(v, context))

            u = jax.lax.fori_loop(0, self.features, sweep, u)
        return u

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        r"""Log density :math:`\log q(x \mid c)`, shape ``(...,)``."""
        z, log_det = self.transform(x, context)
        return standard_normal_log_prob(z) + log_det

    def sample(self, rng_key: jax.Array, context: jax.Array) -> jax.Array:
        """One draw per context row: ``context`` ``(..., c)`` → ``(..., d)``."""
        context = jnp.asarray(context)
        dtype = compute_dtype(context)
        z = jax.random.normal(rng_key, (*context.shape[:-1], self.features), dtype=dtype)
        return self.inverse(z, context)


class MAF(AutoregressiveFlow):
    r"""Conditional masked autoregressive flow with affine layers.

    Attributes
    ----------
    features, num_transforms, hidden_features, num_hidden, activation
        See :class:`AutoregressiveFlow`.
    min_scale : float
        Lower bound :math:`\sigma_{\min}` of the affine scales.

    Notes
    -----
    Layer (data → noise direction), for each dimension :math:`i`:
    :math:`z_i = (u_i - \mu_i) / \sigma_i`, with
    :math:`(\mu_i, \tilde\sigma_i) = \mathrm{MADE}(u_{<i}, c)` and
    :math:`\sigma_i = \sigma_{\min} + \mathrm{softplus}(\tilde\sigma_i + c_0)`,
    :math:`c_0 = \log(e^{1-\sigma_{\min}} - 1)` so :math:`\sigma_i = 1` at init.
    """

    min_scale: float = 1e-3

    def _num_params(self) -> int:
        return 2

    def _layer_forward(self, u: jax.Array, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        shift, scale = raw[..., 0], unit_softplus(raw[..., 1], self.min_scale)
        return (u - shift) / scale, -jnp.sum(jnp.log(scale), axis=-1)

    def _layer_inverse(self, u: jax.Array, raw: jax.Array) -> jax.Array:
        shift, scale = raw[..., 0], unit_softplus(raw[..., 1], self.min_scale)
        return u * scale + shift


def maf(**kwargs: Any) -> MAF:
    """A :class:`MAF` with sbi-like defaults (5 transforms, 2 hidden layers of 50).

    Keyword arguments override the fields, e.g. ``maf(num_transforms=3)``.
    """
    return MAF(**kwargs)
