r"""Variational families on the flat unconstrained space :math:`\mathbb{R}^D`.

A family is a :class:`Family` of pure functions of a parameter pytree:

- ``init(rng_key, loc, scale) -> params``: a distribution centred on ``loc``
  with marginal scales ``scale`` (both ``(D,)``);
- ``sample_and_log_prob(params, rng_key, n, context=None) -> (theta, log_q)``,
  shapes ``(n, D)`` and ``(n,)``, reparameterised (differentiable in ``params``);
- ``log_prob(params, theta, context=None) -> log_q`` at arbitrary ``theta (..., D)``.

Families
--------
``gaussian_diag`` (mean field)
    :math:`\theta = \mu + \sigma \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`,
    :math:`\sigma = \exp(\rho)`.
``gaussian`` (full rank)
    :math:`\theta = \mu + L \varepsilon` with :math:`L` lower triangular,
    positive diagonal :math:`\exp(\mathrm{diag}\,R)`, so :math:`\Sigma = L L^\top`.
``maf``, ``nsf`` (normalising flows)
    :math:`\theta = \mu + L\,T(\varepsilon; c)`, where :math:`T` is the
    project's autoregressive flow (:class:`~pymc_sbi.nn.MAF` / :class:`~pymc_sbi.nn.NSF`)
    used in its cheap direction, ``module.transform``: one MADE pass per layer,
    and :math:`L` is lower triangular with positive diagonal, parameterised as
    for ``gaussian`` (``params = {"loc", "tril_raw", "flow"}``).
    This is the *inverse autoregressive* use of the flow (Kingma et al., 2016),
    the right one for VI, whose losses need samples and the density *of those
    samples*:

    .. math::

        \log q(\theta) = \log\mathcal N(\varepsilon; 0, I)
            - \log\left|\det \partial T / \partial\varepsilon\right|
            - \textstyle\sum_i \log L_{ii} .

    ``log_prob`` at an arbitrary ``theta`` solves :math:`L u = \theta - \mu` and
    inverts :math:`T` by the flow's exact fixed-point sweeps (``D`` MADE passes
    per layer), which only the forward-KL loss, the sticking-the-landing
    gradient and user calls need. The outer full-rank affine :math:`(\mu, L)`
    carries the location, scale and linear correlation, so the flow works on a
    standardised (whitened) variable, as the spline flow's tail bound expects:
    the spline is the identity outside :math:`[-B, B]`, so a draw whose
    :math:`\varepsilon` stays beyond :math:`\pm B` through every layer is
    mapped as by the Gaussian :math:`\mathcal N(\mu, L L^\top)`. ``init`` takes marginal
    scales ``(D,)`` or a Cholesky factor ``(D, D)`` (warm-up passes the factor
    of the prior draws' covariance). The flow starts at the identity, so an
    untrained flow family is the Gaussian :math:`\mathcal N(\mu, L L^\top)`.
    The optional ``context`` ``(n, c)`` makes the flow conditional (amortised
    VI); :math:`(\mu, L)` does not depend on it.

    For the body of :math:`q` the affine and the flow are interchangeable (a
    spline can shift and shrink inside :math:`[-B, B]`), so they are not
    identified; :func:`~pymc_sbi.vi.fit_vi` therefore fits :math:`(\mu, L)` first
    under the mass-covering divergences (its ``pretrain_iters``), or the flow
    absorbs the scale and :math:`q` keeps the warm-up's wide tails.

References
----------
D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling,
"Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from pymc_sbi.nn import maf as _maf
from pymc_sbi.nn import nsf as _nsf

__all__ = ["FAMILIES", "Family", "condition_family", "make_family"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Family(NamedTuple):
    """A variational family: pure functions of its parameter pytree (see the module docstring).

    Attributes
    ----------
    name
        ``"gaussian_diag"``, ``"gaussian"``, ``"maf"`` or ``"nsf"``.
    dim
        Dimension ``D`` of ``theta``.
    init
        ``(rng_key, loc, scale) -> params``.
    sample_and_log_prob
        ``(params, rng_key, n, context=None) -> (theta (n, D), log_q (n,))``.
    log_prob
        ``(params, theta (..., D), context=None) -> log_q (...)``.
    context_dim
        Size of the conditioning input (0: unconditional).
    """

    name: str
    dim: int
    init: Callable[..., Any]
    sample_and_log_prob: Callable[..., tuple[jax.Array, jax.Array]]
    log_prob: Callable[..., jax.Array]
    context_dim: int = 0


def _std_normal_log_prob(eps: jax.Array) -> jax.Array:
    return jnp.sum(-0.5 * eps**2 - _HALF_LOG_2PI, axis=-1)


def _as_vector(value: Any, dim: int, what: str) -> jax.Array:
    arr = jnp.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = jnp.broadcast_to(arr, (dim,))
    if arr.shape != (dim,):
        raise ValueError(f"{what} must be a scalar or have shape ({dim},), got {arr.shape}.")
    return arr


def _no_context(name: str, context: Any) -> None:
    if context is not None:
        raise ValueError(
            f"The {name!r} family is unconditional; use 'maf' or 'nsf' with a context."
        )


def _tril_raw(scale: Any, dim: int) -> jax.Array:
    """Unconstrained lower-triangular parameter: strictly lower part as is, log diagonal.

    ``scale`` is a Cholesky factor ``(D, D)`` or marginal scales (scalar or ``(D,)``).
    """
    scale = jnp.asarray(scale, dtype=float)
    if scale.ndim == 2:  # a Cholesky factor (from warm-up on prior draws)
        if scale.shape != (dim, dim):
            raise ValueError(f"A matrix scale must have shape ({dim}, {dim}), got {scale.shape}.")
        return jnp.tril(scale, -1) + jnp.diag(jnp.log(jnp.diag(scale)))
    return jnp.diag(jnp.log(_as_vector(scale, dim, "scale")))


def _tril(params: Any) -> jax.Array:
    """The lower-triangular ``L`` (positive diagonal) of ``params["tril_raw"]``."""
    raw = params["tril_raw"]
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))


def _log_det_tril(params: Any) -> jax.Array:
    return jnp.sum(jnp.diag(params["tril_raw"]))


def _affine(params: Any, u: jax.Array) -> jax.Array:
    """``loc + L u`` over the last axis."""
    return params["loc"] + u @ _tril(params).T


def _affine_inverse(params: Any, theta: jax.Array, dim: int) -> jax.Array:
    """``L^{-1} (theta - loc)`` over the last axis."""
    diff = theta - params["loc"]
    flat = diff.reshape(-1, dim)
    return solve_triangular(_tril(params), flat.T, lower=True).T.reshape(diff.shape)


def gaussian_diag(dim: int) -> Family:
    """Mean-field Gaussian family (see the module docstring)."""

    def init(rng_key, loc, scale):
        del rng_key
        return {
            "loc": _as_vector(loc, dim, "loc"),
            "log_scale": jnp.log(_as_vector(scale, dim, "scale")),
        }

    def sample_and_log_prob(params, rng_key, n, context=None):
        _no_context("gaussian_diag", context)
        eps = jax.random.normal(rng_key, (n, dim), dtype=params["loc"].dtype)
        theta = params["loc"] + jnp.exp(params["log_scale"]) * eps
        return theta, _std_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    def log_prob(params, theta, context=None):
        _no_context("gaussian_diag", context)
        eps = (theta - params["loc"]) * jnp.exp(-params["log_scale"])
        return _std_normal_log_prob(eps) - jnp.sum(params["log_scale"])

    return Family("gaussian_diag", dim, init, sample_and_log_prob, log_prob)


def gaussian(dim: int) -> Family:
    """Full-rank Gaussian family with a Cholesky parameterisation (module docstring)."""

    def init(rng_key, loc, scale):
        del rng_key
        return {"loc": _as_vector(loc, dim, "loc"), "tril_raw": _tril_raw(scale, dim)}

    def sample_and_log_prob(params, rng_key, n, context=None):
        _no_context("gaussian", context)
        eps = jax.random.normal(rng_key, (n, dim), dtype=params["loc"].dtype)
        return _affine(params, eps), _std_normal_log_prob(eps) - _log_det_tril(params)

    def log_prob(params, theta, context=None):
        _no_context("gaussian", context)
        eps = _affine_inverse(params, jnp.asarray(theta), dim)
        return _std_normal_log_prob(eps) - _log_det_tril(params)

    return Family("gaussian", dim, init, sample_and_log_prob, log_prob)


def flow_family(name: str, dim: int, context_dim: int = 0, **flow_kwargs: Any) -> Family:
    """A ``maf``/``nsf`` flow behind a learned full-rank affine (module docstring).

    ``flow_kwargs`` go to :func:`pymc_sbi.nn.maf` / :func:`pymc_sbi.nn.nsf`
    (e.g. ``num_transforms=3, hidden_features=32``).
    """
    factory = {"maf": _maf, "nsf": _nsf}[name]
    module = factory(**flow_kwargs).clone(features=dim)

    def _context(context, lead, dtype):
        if context is None:
            if context_dim:
                raise ValueError(
                    f"This {name!r} family is conditional: pass a context (..., {context_dim})."
                )
            return jnp.zeros((*lead, 0), dtype=dtype)
        context = jnp.asarray(context, dtype=dtype)
        if context.shape[-1] != context_dim:
            raise ValueError(
                f"context must have shape (..., {context_dim}), got {tuple(context.shape)}."
            )
        return context

    def init(rng_key, loc, scale):
        flow = module.init(rng_key, jnp.zeros((1, dim)), jnp.zeros((1, context_dim)))
        return {"loc": _as_vector(loc, dim, "loc"), "tril_raw": _tril_raw(scale, dim), "flow": flow}

    def sample_and_log_prob(params, rng_key, n, context=None):
        dtype = params["loc"].dtype
        context = _context(context, (n,), dtype)
        eps = jax.random.normal(rng_key, (*context.shape[:-1], dim), dtype=dtype)
        u, log_det = module.apply(params["flow"], eps, context, method="transform")
        log_q = _std_normal_log_prob(eps) - log_det - _log_det_tril(params)
        return _affine(params, u), log_q

    def log_prob(params, theta, context=None):
        theta = jnp.asarray(theta, dtype=params["loc"].dtype)
        u = _affine_inverse(params, theta, dim)
        context = _context(context, u.shape[:-1], u.dtype)
        eps = module.apply(params["flow"], u, context, method="inverse")
        _, log_det = module.apply(params["flow"], eps, context, method="transform")
        return _std_normal_log_prob(eps) - log_det - _log_det_tril(params)

    return Family(name, dim, init, sample_and_log_prob, log_prob, context_dim)


FAMILIES: dict[str, Callable[..., Family]] = {
    "gaussian_diag": gaussian_diag,
    "gaussian": gaussian,
    "maf": lambda dim, **kw: flow_family("maf", dim, **kw),
    "nsf": lambda dim, **kw: flow_family("nsf", dim, **kw),
}


def make_family(family: str | Family, dim: int, **kwargs: Any) -> Family:
    """The family named ``family`` for ``theta`` of size ``dim`` (a :class:`Family` passes through).

    ``kwargs`` go to the flow factories (``context_dim`` and the network's fields).
    """
    if isinstance(family, Family):
        if family.dim != dim:
            raise ValueError(f"The family has dim {family.dim}, the target has dim {dim}.")
        return family
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {sorted(FAMILIES)}.")
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}.")
    if kwargs and family in ("gaussian_diag", "gaussian"):
        raise ValueError(f"The {family!r} family takes no options, got {sorted(kwargs)}.")
    return FAMILIES[family](dim, **kwargs)


def condition_family(family: Family, context: jax.Array) -> Family:
    """An unconditional family: ``family`` with its context fixed to one ``context`` ``(c,)``."""
    context = jnp.asarray(context)
    if context.shape != (family.context_dim,):
        raise ValueError(f"context must have shape ({family.context_dim},), got {context.shape}.")

    def sample_and_log_prob(params, rng_key, n, context_=None):
        _no_context(family.name + " (conditioned)", context_)
        ctx = jnp.broadcast_to(context, (n, family.context_dim))
        return family.sample_and_log_prob(params, rng_key, n, ctx)

    def log_prob(params, theta, context_=None):
        _no_context(family.name + " (conditioned)", context_)
        return family.log_prob(params, theta, context[None] if jnp.ndim(theta) > 1 else context)

    return Family(family.name, family.dim, family.init, sample_and_log_prob, log_prob, 0)
