r"""Classifiers for neural ratio estimation: ``(theta, x) -> logit``.

A ratio estimator is a binary (or multi-class) classifier whose logit
:math:`f(\theta, x)` estimates the log likelihood-to-evidence ratio

.. math::

    \log r(x, \theta) = \log p(x \mid \theta) - \log p(x)
                      = \log p(\theta, x) - \log p(\theta) p(x),

see :mod:`pymc_sbi.objectives.nre` for the losses.  Both networks here read
the concatenation :math:`[\theta, x]` of the (z-scored) inputs, as sbi's
``build_mlp_classifier`` / ``build_resnet_classifier`` do, and return one
unbounded logit per pair.

``__call__(theta, x)`` takes ``theta`` of shape ``(..., d)`` and ``x`` of
shape ``(..., x_dim)``; the leading shapes broadcast against each other (one
``x`` against a grid of ``theta``, say), and the result has the broadcast
leading shape ``(...,)``.  Computation happens in the promoted floating dtype
of the inputs.

Every field is a JSON primitive, so a saved estimator rebuilds the network
from :data:`pymc_sbi.nn.NETWORKS`.  ``features`` is unused: it exists only
because trainers call ``module.clone(features=...)`` on every network.

References
----------
K. He, X. Zhang, S. Ren and J. Sun, "Identity Mappings in Deep Residual
Networks", ECCV 2016, arXiv:1603.05027 (pre-activation residual blocks).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .made import get_activation, prepare_inputs

__all__ = ["MLPClassifier", "ResidualClassifier", "mlp_classifier", "resnet_classifier"]


def _concat(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcast leading axes, promote to a float dtype and concatenate ``[theta, x]``."""
    theta, x = prepare_inputs(theta, x)
    return jnp.concatenate([theta, x], axis=-1)


class MLPClassifier(nn.Module):
    r"""Fully connected classifier :math:`f(\theta, x) = w^\top h_L + b`.

    With :math:`h_0 = [\theta, x]` and :math:`h_{l} = \phi(W_l h_{l-1} + b_l)`
    for :math:`l = 1..L`.

    Attributes
    ----------
    features : int
        Unused (kept for the trainers' ``clone(features=...)`` convention).
    hidden_features : int
        Width of the hidden layers.
    num_hidden : int
        Number :math:`L` of hidden layers (0 gives a linear classifier).
    activation : str
        Activation :math:`\phi`: ``"relu"``, ``"tanh"``, ``"gelu"``, ``"silu"``
        or ``"elu"``.
    """

    features: int = 0
    hidden_features: int = 50
    num_hidden: int = 2
    activation: str = "relu"

    @nn.compact
    def __call__(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        """Logit of each pair, shape ``broadcast(theta.shape[:-1], x.shape[:-1])``."""
        act = get_activation(self.activation)
        h = _concat(theta, x)
        dtype = h.dtype
        for layer in range(self.num_hidden):
            h = act(nn.Dense(self.hidden_features, dtype=dtype, name=f"hidden_{layer}")(h))
        return nn.Dense(1, dtype=dtype, name="logit")(h)[..., 0]


class ResidualClassifier(nn.Module):
    r"""Residual classifier: a linear lift, pre-activation residual blocks, a linear head.

    .. math::

        h_0 = W_0 [\theta, x] + b_0, \qquad
        h_k = h_{k-1} + W_{k,2}\, \phi\bigl(W_{k,1}\, \phi(N(h_{k-1})) + b_{k,1}\bigr) + b_{k,2},
        \qquad f = w^\top \phi(N(h_K)) + b,

    with :math:`N` a layer norm (or the identity).  The second layer of each
    block starts near zero (weights :math:`\mathcal U(\pm 10^{-3})`, as in
    nflows' ``ResidualBlock``), so at initialisation every block is close to
    the identity.

    Attributes
    ----------
    features : int
        Unused (kept for the trainers' ``clone(features=...)`` convention).
    hidden_features : int
        Width of the residual stream.
    num_blocks : int
        Number :math:`K` of residual blocks.
    activation : str
        Activation :math:`\phi` (see :class:`MLPClassifier`).
    layer_norm : bool
        Normalise the residual stream before each block and before the head.
    """

    features: int = 0
    hidden_features: int = 50
    num_blocks: int = 2
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, theta: jax.Array, x: jax.Array) -> jax.Array:
        """Logit of each pair, shape ``broadcast(theta.shape[:-1], x.shape[:-1])``."""
        act = get_activation(self.activation)
        h = _concat(theta, x)
        dtype = h.dtype
        h = nn.Dense(self.hidden_features, dtype=dtype, name="lift")(h)
        near_zero = nn.initializers.uniform(2e-3)  # U(0, 2e-3), shifted below

        def norm(v, name):
            return nn.LayerNorm(dtype=dtype, name=name)(v) if self.layer_norm else v

        for block in range(self.num_blocks):
            u = act(norm(h, f"norm_{block}"))
            u = act(nn.Dense(self.hidden_features, dtype=dtype, name=f"block_{block}_0")(u))
            u = nn.Dense(
                self.hidden_features,
                dtype=dtype,
                kernel_init=lambda k, s, d=jnp.float32: near_zero(k, s, d) - 1e-3,
                name=f"block_{block}_1",
            )(u)
            h = h + u
        h = act(norm(h, "norm_out"))
        return nn.Dense(1, dtype=dtype, name="logit")(h)[..., 0]


def mlp_classifier(**kwargs: Any) -> MLPClassifier:
    """An :class:`MLPClassifier` with sbi's defaults (2 hidden layers of 50, ReLU).

    Keyword arguments override the fields, e.g. ``mlp_classifier(hidden_features=64)``.
    """
    return MLPClassifier(**kwargs)


def resnet_classifier(**kwargs: Any) -> ResidualClassifier:
    """A :class:`ResidualClassifier` with sbi's defaults (2 blocks of width 50, ReLU).

    Keyword arguments override the fields, e.g. ``resnet_classifier(layer_norm=True)``.
    """
    return ResidualClassifier(**kwargs)
