r"""MADE: masked autoencoder for distribution estimation (Germain et al., 2015).

A MADE is an MLP whose weight matrices are multiplied by binary masks so that
output :math:`i` depends only on inputs :math:`x_{<i}` (in the given order),
which makes the Jacobian :math:`\partial\,\mathrm{out}_i / \partial x_j`
strictly lower triangular.  Every unit carries a *degree*: input :math:`j`
(0-based) has degree :math:`m(j) = j + 1`, hidden unit :math:`k` has degree
:math:`k \bmod d \in \{0, \dots, d-1\}`, and output :math:`i` has degree
:math:`i + 1`.  The masks are

.. math::

    M^{\mathrm{hidden}}_{jk} = [\,m(k) \ge m(j)\,], \qquad
    M^{\mathrm{out}}_{ki} = [\,m(i) > m(k)\,],

so a path from :math:`x_j` to output :math:`i` exists only if
:math:`j + 1 \le m(\text{hidden}) < i + 1`, i.e. :math:`j < i`.

The conditioning input (``context``) enters the first hidden layer through an
ordinary, unmasked dense layer, so every hidden unit may depend on it.  Hidden
units of degree 0 see the context but no :math:`x`, and feed every output;
this is what lets the *first* output depend on the context (with the usual
degrees :math:`\{1, \dots, d-1\}` it would be a constant bias for
:math:`d \ge 2`).  For :math:`d = 1` all hidden degrees are 0 and the single
output depends on the context only.

References
----------
M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked Autoencoder for
Distribution Estimation", ICML 2015, arXiv:1502.03509.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ACTIVATIONS",
    "MADE",
    "MaskedDense",
    "compute_dtype",
    "get_activation",
    "prepare_inputs",
    "unit_softplus",
]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation function from its name (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def unit_softplus(raw: jax.Array, min_value: float = 1e-3) -> jax.Array:
    r"""Positive map equal to 1 at ``raw = 0``.

    .. math::

        f(r) = m + \mathrm{softplus}\bigl(r + \log(e^{1 - m} - 1)\bigr) > m,
        \qquad f(0) = 1,

    with :math:`m` = ``min_value``.  Grows linearly (not exponentially) for
    large :math:`r`, which keeps training stable.
    """
    shift = math.log(math.expm1(1.0 - min_value))
    return min_value + jax.nn.softplus(raw + shift)


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """Floating dtype that results from promoting ``arrays`` (integers → default float)."""
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def prepare_inputs(x: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cast ``x`` and ``context`` to a common float dtype and broadcast leading axes.

    ``x`` has shape ``(..., d)`` and ``context`` shape ``(..., c)``; the leading
    shapes are broadcast against each other (e.g. one context for many ``x``).
    """
    x, context = jnp.asarray(x), jnp.asarray(context)
    if x.ndim < 1 or context.ndim < 1:
        raise ValueError("x and context need a trailing feature axis: shapes (..., d), (..., c)")
    dtype = compute_dtype(x, context)
    lead = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    x = jnp.broadcast_to(x.astype(dtype), (*lead, x.shape[-1]))
    context = jnp.broadcast_to(context.astype(dtype), (*lead, context.shape[-1]))
    return x, context


class MaskedDense(nn.Module):
    """Dense layer ``y = x @ (W * M) + b`` with an autoregressive mask ``M``.

    Attributes
    ----------
    in_degrees, out_degrees : tuple of int
        Degrees of the input and output units.
    strict : bool
        ``True`` for the output layer (connect if ``out > in``), ``False`` for
        hidden layers (connect if ``out >= in``).
    zero_init : bool
        Initialise kernel and bias at zero (used for the output layer so that
        a fresh flow is the identity).
    param_dtype : dtype
        Dtype of the stored kernel and bias (float32 like ``flax.linen.Dense``,
        also under ``jax_enable_x64``, which ``import pymc.sampling.jax`` turns
        on; the layer computes in the input's dtype).
    """

    in_degrees: tuple[int, ...]
    out_degrees: tuple[int, ...]
    strict: bool = False
    zero_init: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x @ (mask * kernel) + bias``: a dense layer with the autoregressive mask."""
        din = np.asarray(self.in_degrees)[:, None]
        dout = np.asarray(self.out_degrees)[None, :]
        mask = (dout > din) if self.strict else (dout >= din)
        kernel_init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        shape = (len(self.in_degrees), len(self.out_degrees))
        kernel = self.param("kernel", kernel_init, shape, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (shape[1],), self.param_dtype)
        masked = kernel.astype(x.dtype) * jnp.asarray(mask, dtype=x.dtype)
        return x @ masked + bias.astype(x.dtype)


class MADE(nn.Module):
    r"""Conditional MADE returning ``num_params`` outputs per input dimension.

    Attributes
    ----------
    features : int
        Dimension :math:`d` of the autoregressive input.
    num_params : int
        Number of outputs per dimension (e.g. 2 for shift and scale).
    hidden_features : int
        Width of each hidden layer.
    num_hidden : int
        Number of hidden layers (at least 1).
    activation : str
        Name of the activation, see :data:`ACTIVATIONS`.
    zero_init_output : bool
        Zero-initialise the output layer (all outputs exactly 0 at init).

    Notes
    -----
    ``__call__(x, context)`` maps ``x`` of shape ``(..., d)`` and ``context``
    of shape ``(..., c)`` to an array of shape ``(..., d, num_params)`` whose
    entry ``[..., i, :]`` depends on ``x[..., :i]`` and ``context`` only.
    Computation happens in the (promoted) dtype of the inputs.
    """

    features: int
    num_params: int = 2
    hidden_features: int = 50
    num_hidden: int = 2
    activation: str = "relu"
    zero_init_output: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """Outputs for each dimension ``i`` that depend on ``x[..., :i]`` and ``context`` only."""
        d = self.features
        if d < 1 or self.num_hidden < 1 or self.hidden_features < 1:
            raise ValueError("MADE needs features, num_hidden and hidden_features >= 1")
        if x.shape[-1] != d:
            raise ValueError(f"MADE expected x with {d} features, got shape {x.shape}")
        x, context = prepare_inputs(x, context)
        act = get_activation(self.activation)
        in_deg = tuple(range(1, d + 1))
        hid_deg = tuple(k % d for k in range(self.hidden_features))
        h = MaskedDense(in_deg, hid_deg, strict=False, name="masked_in")(x)
        h = h + nn.Dense(self.hidden_features, dtype=x.dtype, name="context_in")(context)
        h = act(h)
        for layer in range(1, self.num_hidden):
            h = act(MaskedDense(hid_deg, hid_deg, strict=False, name=f"masked_{layer}")(h))
        out_deg = tuple(i + 1 for i in range(d) for _ in range(self.num_params))
        out = MaskedDense(
            hid_deg, out_deg, strict=True, zero_init=self.zero_init_output, name="masked_out"
        )(h)
        return out.reshape(*out.shape[:-1], d, self.num_params)
