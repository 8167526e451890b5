r"""Mixed discrete/continuous conditional density (the network behind MNLE).

For data :math:`x = (y, k)` with a continuous part :math:`y \in \mathbb{R}^{m}`
and one categorical part :math:`k \in \{0, \dots, K-1\}` (the *last* column
of ``x``), the density factorises as

.. math::

    q(y, k \mid c) = \pi_k(c)\; q_{\text{flow}}\bigl(y \mid c, \mathrm{onehot}(k)\bigr),

where :math:`\pi(c) = \mathrm{softmax}(\mathrm{MLP}(c))` is a categorical
network and :math:`q_{\text{flow}}` is any conditional density of
:mod:`pymc_sbi.nn` (MDN, MAF, NSF) conditioned on the context *and* the
category (Boelts et al. 2022, "Flexible and efficient simulation-based
inference for models of decision-making"). Summing over :math:`k` and
integrating over :math:`y` gives one: each factor is normalised.

The module sees the continuous part already transformed (log and z-scored by
:func:`pymc_sbi.objectives.mnle.mnle_log_prob`); the category column arrives
as raw integers stored as floats.

References
----------
J. Boelts, J.-M. Lueckmann, R. Gao, J. H. Macke, "Flexible and efficient
simulation-based inference for models of decision-making", eLife 11:e77220, 2022.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .made import compute_dtype, get_activation

__all__ = ["MixedDensity", "mixed_density"]


class MixedDensity(nn.Module):
    r"""Categorical network times a conditional flow for mixed data ``x = (y, k)``.

    Attributes
    ----------
    features : int
        Total dimension of ``x``: ``m`` continuous columns plus the category
        column (0 = set later by the MNLE objective).
    num_categories : int
        :math:`K`, number of values of the category column (0 = set by the
        MNLE objective from the training data).
    flow : nn.Module
        Conditional density of the continuous part (its ``features`` is set to
        ``m`` by :meth:`bind`). Default :func:`~pymc_sbi.nn.mdn` with 5 components.
    log_transform : bool
        Model :math:`\log y` instead of :math:`y` (for positive data such as
        reaction times); the Jacobian :math:`-\sum_j \log y_j` is added by
        :func:`~pymc_sbi.objectives.mnle.mnle_log_prob`.
    hidden_features, num_hidden, activation
        The categorical MLP.
    """

    features: int = 0
    num_categories: int = 0
    flow: nn.Module | None = None
    log_transform: bool = True
    hidden_features: int = 50
    num_hidden: int = 2
    activation: str = "relu"

    @nn.nowrap
    def bind_shapes(self, features: int, num_categories: int) -> MixedDensity:
        """A copy with ``features``/``num_categories`` set and the flow sized ``features - 1``."""
        if features < 2:
            raise ValueError(
                f"MixedDensity needs x with >= 2 columns (continuous..., category), got {features}."
            )
        if num_categories < 2:
            raise ValueError(f"num_categories must be >= 2, got {num_categories}.")
        flow = self.flow
        if flow is None:
            from .mdn import MDN

            flow = MDN(num_components=5, parent=None)
        return self.clone(
            features=int(features),
            num_categories=int(num_categories),
            flow=flow.clone(features=int(features) - 1, parent=None),
        )

    @nn.nowrap
    def _check(self) -> None:
        if self.features < 2 or self.num_categories < 2 or self.flow is None:
            raise ValueError(
                "MixedDensity is not bound to data: call bind_shapes(features, num_categories)"
                " (the MNLE objective does this from the training set)."
            )

    @nn.compact
    def logits(self, context: jax.Array) -> jax.Array:
        """Unnormalised category log-probabilities ``(..., K)``."""
        dtype = compute_dtype(context)
        h = jnp.asarray(context, dtype)
        act = get_activation(self.activation)
        for layer in range(self.num_hidden):
            h = act(nn.Dense(self.hidden_features, dtype=dtype, name=f"cat_hidden_{layer}")(h))
        return nn.Dense(self.num_categories, dtype=dtype, name="cat_logits")(h)

    def _flow_context(self, context, k):
        onehot = jax.nn.one_hot(k, self.num_categories, dtype=context.dtype)
        return jnp.concatenate([context, onehot], axis=-1)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        r""":math:`\log \pi_k(c) + \log q_{\text{flow}}(y \mid c, k)`, shape ``(...,)``.

        Categories outside ``{0, ..., K-1}`` (or non-integer) get ``-inf``.
        """
        self._check()
        x, context = jnp.asarray(x), jnp.asarray(context)
        dtype = compute_dtype(x, context)
        lead = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        x = jnp.broadcast_to(x.astype(dtype), (*lead, x.shape[-1]))
        context = jnp.broadcast_to(context.astype(dtype), (*lead, context.shape[-1]))
        y, k_raw = x[..., :-1], x[..., -1]
        k = jnp.clip(jnp.round(k_raw), 0, self.num_categories - 1).astype(jnp.int32)
        valid = (k_raw == k.astype(dtype)) & (k_raw >= 0)
        log_pi = jax.nn.log_softmax(self.logits(context), axis=-1)
        lp_k = jnp.take_along_axis(log_pi, k[..., None], axis=-1)[..., 0]
        lp_y = self.flow(y, self._flow_context(context, k))
        return jnp.where(valid, lp_k + lp_y, -jnp.inf)

    def sample(self, rng_key: jax.Array, context: jax.Array) -> jax.Array:
        """One draw ``(y, k)`` per context row: ``(..., c)`` → ``(..., features)``."""
        self._check()
        context = jnp.asarray(context)
        context = context.astype(compute_dtype(context))
        key_k, key_y = jax.random.split(rng_key)
        k = jax.random.categorical(key_k, self.logits(context), axis=-1)
        y = self.flow.sample(key_y, self._flow_context(context, k))
        return jnp.concatenate([y, k[..., None].astype(y.dtype)], axis=-1)

    def context_terms(self, context: jax.Array):
        r"""Everything the density needs from a context, for every category at once.

        Only for an MDN flow, whose mixture depends on the context alone (not on
        :math:`y`): with these, :math:`\log q(y, k \mid c)` at many trials that
        share a context costs one network pass per context
        (:mod:`pymc_sbi.dedup`).

        Returns
        -------
        log_pi : Array ``(..., K)``
            :math:`\log \pi_k(c)`.
        mixture : tuple
            The flow's :meth:`~pymc_sbi.nn.MDN.mixture` given ``(c, onehot(k))``
            for each ``k``: ``(..., K, C)``, ``(..., K, C, m)``, ``(..., K, C, m, m)``.
        """
        self._check()
        if not hasattr(self.flow, "mixture"):
            raise TypeError(
                f"context_terms needs an MDN flow, got {type(self.flow).__name__} (whose "
                "density of y is not a function of the context alone)."
            )
        context = jnp.asarray(context)
        context = context.astype(compute_dtype(context))
        log_pi = jax.nn.log_softmax(self.logits(context), axis=-1)
        K, lead = self.num_categories, context.shape[:-1]
        eye = jnp.broadcast_to(jnp.eye(K, dtype=context.dtype), (*lead, K, K))
        rows = jnp.broadcast_to(context[..., None, :], (*lead, K, context.shape[-1]))
        return log_pi, self.flow.mixture(jnp.concatenate([rows, eye], axis=-1))

    def category_log_probs(self, context: jax.Array) -> jax.Array:
        r""":math:`\log \pi(c)`, shape ``(..., K)``."""
        self._check()
        return jax.nn.log_softmax(self.logits(jnp.asarray(context)), axis=-1)


def mixed_density(flow: nn.Module | None = None, **kwargs: Any) -> MixedDensity:
    """A :class:`MixedDensity` (default flow: a 5-component :func:`~pymc_sbi.nn.mdn`).

    Keyword arguments set the other fields, e.g. ``mixed_density(nsf(), log_transform=False)``.
    """
    return MixedDensity(flow=flow, **kwargs)


def _register() -> None:
    from .registry import NETWORKS, register_network

    if "mixed_density" not in NETWORKS:
        register_network("mixed_density", MixedDensity)


_register()
