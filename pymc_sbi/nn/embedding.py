r"""Embedding (summary) networks and the density-with-embedding composite.

An embedding network :math:`s_\psi` maps a (z-scored, flattened) observation
:math:`x` to a lower-dimensional summary that conditions a density estimator,

.. math::

    q_{\phi,\psi}(\theta \mid x) = q_\phi\bigl(\theta \mid s_\psi(x)\bigr),

and both are trained jointly by the density estimator's loss (Greenberg,
Nonnenmacher & Macke 2019; sbi's ``embedding_net``).  :class:`EmbeddedDensity`
is that composite: it has the same interface as the conditional densities of
:mod:`pymc_sbi.nn` (``apply(params, value, context)`` and
``method="sample"``), so the objectives and the estimator use it unchanged.

Both classes are linen dataclasses whose fields are JSON primitives or
registered modules, so :func:`~pymc_sbi.nn.network_config` serialises them
(module-valued fields as nested ``{"family", "config"}`` dicts).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .made import compute_dtype, get_activation

__all__ = ["EmbeddedDensity", "MLPEmbedding", "mlp_embedding"]


class MLPEmbedding(nn.Module):
    r"""Fully connected summary network :math:`s(x) = W_L h_{L-1} + b_L`.

    Attributes
    ----------
    hidden_features : int
        Width of each hidden layer.
    num_hidden : int
        Number of hidden layers (0 gives a linear map).
    output_features : int
        Dimension of the summary :math:`s(x)`.
    activation : str
        Activation of the hidden layers (see :data:`~pymc_sbi.nn.made.ACTIVATIONS`).

    Notes
    -----
    ``__call__(x)`` maps ``x`` of shape ``(..., x_dim)`` to ``(..., output_features)``,
    computing in the floating dtype of ``x``.  The output layer is linear, so
    the summary is unconstrained.
    """

    hidden_features: int = 50
    num_hidden: int = 2
    output_features: int = 20
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Embed ``x`` ``(..., d_x)`` into ``(..., output_features)``."""
        if self.output_features < 1 or self.num_hidden < 0:
            raise ValueError("MLPEmbedding needs output_features >= 1 and num_hidden >= 0")
        x = jnp.asarray(x)
        dtype = compute_dtype(x)
        h = x.astype(dtype)
        act = get_activation(self.activation)
        for layer in range(self.num_hidden):
            h = act(nn.Dense(self.hidden_features, dtype=dtype, name=f"hidden_{layer}")(h))
        return nn.Dense(self.output_features, dtype=dtype, name="out")(h)


def mlp_embedding(**kwargs: Any) -> MLPEmbedding:
    """An :class:`MLPEmbedding` (defaults: 2 hidden layers of 50, 20 outputs)."""
    return MLPEmbedding(**kwargs)


class EmbeddedDensity(nn.Module):
    r"""A conditional density whose context passes through an embedding network first.

    Attributes
    ----------
    density : nn.Module
        Conditional density with ``__call__(value, context)`` and ``sample(rng_key,
        context)`` (e.g. :class:`~pymc_sbi.nn.MAF`), its ``features`` already set.
    embedding : nn.Module
        Summary network ``context -> summary`` (e.g. :class:`MLPEmbedding`).

    Notes
    -----
    .. math:: \log q(v \mid c) = \log q_{\text{density}}\bigl(v \mid s(c)\bigr)

    ``features`` is read from ``density``; to set it use
    :meth:`with_features` (``module.clone(features=d)`` does not reach the
    nested density).
    """

    density: nn.Module
    embedding: nn.Module

    @property
    def features(self) -> int:
        """Dimension of the modelled variable (that of ``density``)."""
        return int(getattr(self.density, "features", 0))

    def with_features(self, features: int) -> EmbeddedDensity:
        """A copy whose density models ``features`` dimensions."""
        return self.clone(density=self.density.clone(features=int(features)))

    def __call__(self, value: jax.Array, context: jax.Array) -> jax.Array:
        r"""Log density :math:`\log q(v \mid c)`, shape ``(...,)``."""
        return self.density(value, self.embedding(context))

    def sample(self, rng_key: jax.Array, context: jax.Array) -> jax.Array:
        """One draw per context row: ``context`` ``(..., c)`` → ``(..., d)``."""
        return self.density.sample(rng_key, self.embedding(context))
