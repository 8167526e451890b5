r"""One network pass per distinct context: trial deduplication for likelihood terms.

In a hierarchical model the surrogate's context :math:`c_n = (\theta_{g(n)}, s_n)`
of trial :math:`n` repeats: every trial of subject :math:`g` shares
:math:`\theta_g`, and experimental designs use a few stimulus levels
:math:`s`. When the network's density of :math:`x` depends on the context only
through quantities computed *from the context alone* -- a mixture density
network's weights, means and precision factors, and MNLE's category
probabilities -- those can be computed once per distinct context and gathered
per trial:

.. math::

    \log q(x_n \mid c_n) = \ell\bigl(x_n;\ \phi(c_{u(n)})\bigr), \qquad
    u(n) \in \{1, \dots, U\},\ U \ll N,

where :math:`\phi` is the network and :math:`\ell` the cheap closed-form
density. The result is identical to evaluating every trial (same network, same
arithmetic per context) and its gradient flows through the gather. For MNLE
:math:`\phi` is evaluated for every category at each context, so the key is
``(group, covariates)`` and the observed category only selects a row.

The distinct contexts are found once, when the term is built, from the
*constant* parts of the key: which parameter group a trial belongs to (the
layout of the observations against the parameters' batch axes) and the
covariate values. So deduplication applies when the covariates are NumPy arrays
(not ``pm.Data``, which can change) and the parameters have fewer distinct
values than trials (shared, or per group in the ``(groups, trials, ...)``
layout). Parameters indexed per trial (``mu[subject_idx]``) reach the term as
per-trial values, so they are evaluated per trial.

Supported estimators: NLE with an :func:`~pymc_sbi.nn.mdn` network and MNLE
with an MDN flow (the default ``mixed_density()``), single networks and
ensembles.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.estimator import Estimator
from pymc_sbi.nn.mdn import MDN, mixture_offsets, offset_log_prob
from pymc_sbi.objectives.mnle import continuous_transform
from pymc_sbi.objectives.standardize import Standardization

__all__ = ["ContextPlan", "indexed_log_density", "plan_contexts", "supports_deduplication"]


class ContextPlan(NamedTuple):
    """Which distinct context each trial uses (NumPy, fixed when the term is built).

    Attributes
    ----------
    batch_shape
        Leading (trial) shape of the observations.
    group_shape
        Shape the parameters are broadcast to before flattening into ``G``
        groups: the batch sizes on the parameters' own axes, 1 on the axes
        they share (broadcast) across trials.
    group
        ``(U,)`` group of each distinct context.
    covariates
        ``(U, c)`` covariates of each distinct context, or ``None``.
    index
        ``(N,)`` distinct context of each trial, ``N = prod(batch_shape)``.
    """

    batch_shape: tuple[int, ...]
    group_shape: tuple[int, ...]
    group: np.ndarray
    covariates: np.ndarray | None
    index: np.ndarray

    @property
    def n_contexts(self) -> int:
        """Number of distinct contexts, i.e. network evaluations per log density."""
        return int(self.group.shape[0])


def supports_deduplication(estimator: Estimator) -> bool:
    """Whether ``estimator``'s density of ``x`` factors through a context-only network pass."""
    if estimator.kind == "nle":
        return isinstance(estimator.module, MDN)
    if estimator.kind == "mnle":
        return isinstance(getattr(estimator.module, "flow", None), MDN)
    return False


def _categories(estimator: Estimator) -> int:
    return int(estimator.module.num_categories) if estimator.kind == "mnle" else 1


def plan_contexts(
    estimator: Estimator,
    batch_shape: tuple[int, ...],
    theta_batch: tuple[int | None, ...],
    covariates: np.ndarray | None,
    min_saving: float = 2.0,
) -> ContextPlan | None:
    """Distinct ``(group, covariates)`` contexts of the trials, or ``None`` if it does not pay.

    Parameters
    ----------
    estimator
        The likelihood estimator (see :func:`supports_deduplication`).
    batch_shape
        Static leading shape of the observations ``x`` ``(*batch_shape, *x_shape)``.
    theta_batch
        Static batch shape of the parameter tensor (``None`` = unknown size);
        axes of static size 1, and missing leading axes, are shared by trials.
    covariates
        Constant covariates ``(*batch_shape, c)`` (broadcastable), or ``None``.
    min_saving
        Use the plan only if it cuts the network rows by at least this factor
        (each context is evaluated for every MNLE category).
    """
    if not supports_deduplication(estimator) or not batch_shape:
        return None
    n = math.prod(batch_shape)
    if len(theta_batch) > len(batch_shape) or n == 0:
        return None
    tb = (1,) * (len(batch_shape) - len(theta_batch)) + tuple(theta_batch)
    group_shape = tuple(1 if t == 1 else b for t, b in zip(tb, batch_shape, strict=True))
    g = np.broadcast_to(np.arange(math.prod(group_shape)).reshape(group_shape), batch_shape)
    keys = g.reshape(n, 1).astype(np.float64)
    if covariates is not None:
        c = estimator.n_covariates
        cov = np.broadcast_to(np.asarray(covariates, np.float64), (*batch_shape, c)).reshape(n, c)
        keys = np.concatenate([keys, cov], axis=1)
    uniq, index = np.unique(keys, axis=0, return_inverse=True)
    if uniq.shape[0] * _categories(estimator) * min_saving > n:
        return None
    return ContextPlan(
        batch_shape=tuple(batch_shape),
        group_shape=group_shape,
        group=uniq[:, 0].astype(np.int64),
        covariates=None if covariates is None else uniq[:, 1:],
        index=np.asarray(index, np.int64).reshape(n),
    )


def _context_log_prob(kind, module, params, std: Standardization, x, context, index):
    """Per-trial log density ``(N,)`` from distinct ``context`` ``(U, d + c)`` and ``index``."""
    zc = std.theta(context)
    if kind == "nle":
        log_w, means, factors = module.apply(params, zc, method="mixture")
        table = (mixture_offsets(log_w, factors), means, factors)
        return offset_log_prob(std.x(x), *_gather(table, index)) + std.x_log_det()
    # mnle: x = (y..., k); rows of the per-(context, category) table are u * K + k, and
    # log pi_k joins each component's offset: log q(y, k) = logsumexp_j(log pi_k + o_kj - ...)
    y, k_raw = x[..., :-1], x[..., -1]
    u, log_jac, valid = continuous_transform(module, y)
    z = (u - std.x_mean[:-1]) / std.x_std[:-1]
    log_pi, (log_w, means, factors) = module.apply(params, zc, method="context_terms")
    K = module.num_categories
    k = jnp.clip(jnp.round(k_raw), 0, K - 1).astype(jnp.int32)
    valid = valid & (k_raw == k.astype(k_raw.dtype)) & (k_raw >= 0)
    offsets = log_pi[..., None] + mixture_offsets(log_w, factors)  # (U, K, C)
    table = [a.reshape(-1, *a.shape[2:]) for a in (offsets, means, factors)]  # (U * K, ...)
    lp = offset_log_prob(z, *_gather(table, index * K + k))
    return jnp.where(valid, lp + std.x_log_det() + log_jac, -jnp.inf)


def _gather(arrays, rows):
    """``[a[rows] for a in arrays]`` as one gather (one scatter-add in the gradient)."""
    n = arrays[0].shape[0]
    flat = jnp.concatenate([a.reshape(n, -1) for a in arrays], axis=1)[rows]
    out, start = [], 0
    for a in arrays:
        size = math.prod(a.shape[1:])
        out.append(flat[:, start : start + size].reshape(rows.shape + a.shape[1:]))
        start += size
    return out


def indexed_log_density(estimator: Estimator, plan: ContextPlan):
    """A JAX function ``(x, theta) -> log q`` of shape ``plan.batch_shape`` using ``plan``.

    ``x`` is ``(*batch_shape, *x_shape)``; ``theta`` broadcasts to
    ``(*group_shape, d)`` (the term's aligned parameter tensor). Equal to
    ``estimator.log_prob(x, theta, covariates)`` for the covariates of the plan.
    """
    dt, d = estimator.dtype, estimator.spec.dim
    group = jnp.asarray(plan.group)
    index = jnp.asarray(plan.index)
    cov = None if plan.covariates is None else jnp.asarray(plan.covariates, dt)
    kind, module, std = estimator.kind, estimator.module, estimator.standardization
    n = math.prod(plan.batch_shape)

    def log_density(x, theta):
        out_dtype = jnp.result_type(x.dtype, theta.dtype, jnp.float32)
        theta_g = jnp.broadcast_to(theta, (*plan.group_shape, d)).reshape(-1, d).astype(dt)
        context = theta_g[group]
        if cov is not None:
            context = jnp.concatenate([context, cov], axis=-1)
        xf = x.reshape(n, estimator.x_dim).astype(dt)
        if estimator.members is None:
            lp = _context_log_prob(kind, module, estimator.params, std, xf, context, index)
        else:
            values = jax.vmap(
                lambda p: _context_log_prob(kind, module, p, std, xf, context, index)
            )(estimator.params)
            lp = jax.nn.logsumexp(values, axis=0) - jnp.log(values.shape[0]).astype(values.dtype)
        return lp.reshape(plan.batch_shape).astype(out_dtype)

    return log_density
