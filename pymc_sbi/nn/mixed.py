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

**Shared trunk** (``shared_trunk=True``, MDN flows only). The
factorisation above runs :math:`1 + K` networks per context: the categorical
MLP, and the MDN's MLP once for each category. With a shared trunk one MLP
encodes the context, :math:`h = \mathrm{MLP}(c)`, and one linear layer of
:math:`h` gives the category logits *and* every category's mixture
parameters, :math:`\phi_k(c) = W_k h + b_k` (weights, means and precision
factors of :math:`q(y \mid c, k)`, transformed as in
:func:`~pymc_sbi.nn.mdn.mixture_from_raw`). The density is the same product of
two normalised factors; one context costs one MLP pass instead of
:math:`1 + K`, which is what a hierarchical model with many (subject,
condition) contexts pays at every gradient evaluation
(:mod:`pymc_sbi.terms.dedup`). The flow's ``hidden_features``/``num_hidden`` are
unused in this mode (its ``num_components`` and ``min_diag`` are).

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
import numpy as np

from .made import compute_dtype, get_activation
from .mdn import MDN, mixture_from_raw, mixture_log_prob, sample_mixture

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
        The categorical MLP (with ``shared_trunk``: the trunk shared by both factors).
    shared_trunk : bool
        One MLP encodes the context for both factors and one linear layer
        gives every category's mixture (module docstring); needs an MDN flow.
    """

    features: int = 0
    num_categories: int = 0
    flow: nn.Module | None = None
    log_transform: bool = True
    hidden_features: int = 50
    num_hidden: int = 2
    activation: str = "relu"
    shared_trunk: bool = False

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
            flow = MDN(num_components=5, parent=None)
        if self.shared_trunk and not isinstance(flow, MDN):
            raise ValueError(
                f"shared_trunk=True needs an MDN flow (mdn()), got {type(flow).__name__}: "
                "only a mixture's parameters are a function of the context alone."
            )
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
    def _encode(self, context: jax.Array) -> tuple[jax.Array, Any]:
        """``(logits, flow_input)``: category logits ``(..., K)`` and what the flow needs.

        Separate networks: the flow input is the context itself and the logits
        come from their own MLP. Shared trunk: the flow input is every
        category's mixture, ``((..., K, C), (..., K, C, m), (..., K, C, m, m))``,
        from the same linear layer of the trunk's features as the logits.
        """
        dtype = compute_dtype(context)
        h = jnp.asarray(context, dtype)
        act = get_activation(self.activation)
        prefix = "trunk" if self.shared_trunk else "cat_hidden"
        z = h
        for layer in range(self.num_hidden):
            z = act(nn.Dense(self.hidden_features, dtype=dtype, name=f"{prefix}_{layer}")(z))
        if not self.shared_trunk:
            return nn.Dense(self.num_categories, dtype=dtype, name="cat_logits")(z), h
        K, C, m = self.num_categories, self.flow.num_components, self.features - 1
        n_tri = m * (m + 1) // 2
        width = C * (1 + m + n_tri)  # per category: component logits, means, factors
        out = nn.Dense(K + K * width, dtype=dtype, kernel_init=_head_init(K, C, m), name="head")(z)
        lead = out.shape[:-1]
        logits, per_k = out[..., :K], out[..., K:].reshape(*lead, K, width)
        raw_w = per_k[..., :C]
        raw_mu = per_k[..., C : C * (1 + m)].reshape(*lead, K, C, m)
        raw_tri = per_k[..., C * (1 + m) :].reshape(*lead, K, C, n_tri)
        return logits, mixture_from_raw(raw_w, raw_mu, raw_tri, self.flow.min_diag)

    def logits(self, context: jax.Array) -> jax.Array:
        """Unnormalised category log-probabilities ``(..., K)``."""
        return self._encode(context)[0]

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
        logits, flow_input = self._encode(context)
        log_pi = jax.nn.log_softmax(logits, axis=-1)
        lp_k = jnp.take_along_axis(log_pi, k[..., None], axis=-1)[..., 0]
        if self.shared_trunk:
            lp_y = mixture_log_prob(y, *_select(flow_input, k))
        else:
            lp_y = self.flow(y, self._flow_context(context, k))
        return jnp.where(valid, lp_k + lp_y, -jnp.inf)

    def sample(self, rng_key: jax.Array, context: jax.Array) -> jax.Array:
        """One draw ``(y, k)`` per context row: ``(..., c)`` → ``(..., features)``."""
        self._check()
        context = jnp.asarray(context)
        context = context.astype(compute_dtype(context))
        key_k, key_y = jax.random.split(rng_key)
        logits, flow_input = self._encode(context)
        k = jax.random.categorical(key_k, logits, axis=-1)
        if self.shared_trunk:
            y = sample_mixture(key_y, *_select(flow_input, k))
        else:
            y = self.flow.sample(key_y, self._flow_context(context, k))
        return jnp.concatenate([y, k[..., None].astype(y.dtype)], axis=-1)

    def context_terms(self, context: jax.Array):
        r"""Everything the density needs from a context, for every category at once.

        Only for an MDN flow, whose mixture depends on the context alone (not on
        :math:`y`): with these, :math:`\log q(y, k \mid c)` at many trials that
        share a context costs one network pass per context
        (:mod:`pymc_sbi.terms.dedup`).

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
        logits, flow_input = self._encode(context)
        log_pi = jax.nn.log_softmax(logits, axis=-1)
        if self.shared_trunk:
            return log_pi, flow_input
        K, lead = self.num_categories, context.shape[:-1]
        eye = jnp.broadcast_to(jnp.eye(K, dtype=context.dtype), (*lead, K, K))
        rows = jnp.broadcast_to(context[..., None, :], (*lead, K, context.shape[-1]))
        return log_pi, self.flow.mixture(jnp.concatenate([rows, eye], axis=-1))

    def category_log_probs(self, context: jax.Array) -> jax.Array:
        r""":math:`\log \pi(c)`, shape ``(..., K)``."""
        self._check()
        return jax.nn.log_softmax(self.logits(jnp.asarray(context)), axis=-1)


def _select(mixtures, k):
    """Category ``k`` ``(...)`` of per-category mixtures ``(..., K, ...)``."""
    axis = k.ndim
    return tuple(
        jnp.take_along_axis(a, k.reshape(k.shape + (1,) * (a.ndim - axis)), axis=axis).squeeze(axis)
        for a in mixtures
    )


def _head_init(K: int, C: int, m: int):
    """Kernel init of the shared head: zero except the means' columns (as :class:`MDN`).

    Zero logit and factor columns start every category uniform over components
    with unit precision; small random mean columns let the components separate.
    """
    small = nn.initializers.variance_scaling(0.1, "fan_in", "truncated_normal")
    n_tri = m * (m + 1) // 2
    width = C * (1 + m + n_tri)
    mean_cols = np.zeros(K + K * width, bool)
    for k in range(K):
        start = K + k * width + C
        mean_cols[start : start + C * m] = True

    def init(key, shape, dtype=jnp.float32):
        return jnp.where(mean_cols, small(key, shape, dtype), jnp.zeros(shape, dtype))

    return init


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
