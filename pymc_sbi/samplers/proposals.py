r"""Proposals for the independent Metropolis-Hastings kernel (``kernel="imh"``).

A proposal is any object with

- ``sample(rng_key, n) -> (n, dim)`` draws of the flat unconstrained ``z``, and
- ``log_prob(z) -> log q(z)`` for ``z`` of shape ``(dim,)`` (or batched ``(..., dim)``),

both pure JAX. IMH accepts a draw :math:`z'` with probability
:math:`\min\{1, \pi(z') q(z) / (\pi(z) q(z'))\}`, so a proposal close to the
posterior with heavier tails mixes in one step; an exact proposal accepts
everything.

:func:`npe_proposal` turns a neural posterior estimate :math:`q(\theta\mid x)`
(constrained :math:`\theta`, in the estimator's :class:`~pymc_sbi.ParamSpec`
order) into a density on the model's unconstrained :math:`z = T(\theta)`:

.. math::

    \log q_z(z) = \log q\big(\theta(z) \mid x\big)
        + \log\left|\det \frac{\partial \theta}{\partial z}\right|,

with :math:`\theta(z)` the model's own inverse transforms (the same
``constrained_fn`` the samplers use), so IMH on a ``NeuralLikelihood`` model
with an NPE proposal is exact MCMC for the model's posterior whatever the
NPE's errors. Draws of :math:`q` outside the prior support have no :math:`z`
(NaN) and are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm

from pymc_sbi.terms.jaxmodel import jax_model

__all__ = ["GaussianProposal", "NPEProposal", "fit_gaussian", "npe_proposal"]


@dataclass(frozen=True, eq=False)
class GaussianProposal:
    r"""Multivariate normal (or Student-t with ``df`` degrees of freedom) :math:`q(z)`.

    Attributes
    ----------
    mean
        ``(dim,)``.
    chol
        ``(dim, dim)`` lower Cholesky factor of the scale matrix.
    df
        Degrees of freedom of a multivariate Student-t, or ``None`` for a normal.
    """

    mean: jax.Array
    chol: jax.Array
    df: float | None = None

    def sample(self, rng_key: jax.Array, n: int) -> jax.Array:
        """``(n, dim)`` draws."""
        k1, k2 = jax.random.split(rng_key)
        eps = jax.random.normal(k1, (n, self.mean.shape[0]), self.mean.dtype)
        if self.df is not None:
            g = jax.random.gamma(k2, self.df / 2.0, (n, 1), self.mean.dtype) / (self.df / 2.0)
            eps = eps / jnp.sqrt(g)
        return self.mean + eps @ self.chol.T

    def log_prob(self, z: jax.Array) -> jax.Array:
        """Normalised log density at ``z`` of shape ``(..., dim)``."""
        d = self.mean.shape[0]
        dev = jnp.asarray(z) - self.mean
        sol = jax.scipy.linalg.solve_triangular(self.chol, dev[..., None], lower=True)[..., 0]
        maha = jnp.sum(sol**2, axis=-1)
        log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.chol))))
        if self.df is None:
            return -0.5 * maha - log_det - 0.5 * d * jnp.log(2 * jnp.pi)
        nu = self.df
        return (
            jax.scipy.special.gammaln((nu + d) / 2.0)
            - jax.scipy.special.gammaln(nu / 2.0)
            - 0.5 * d * jnp.log(nu * jnp.pi)
            - log_det
            - 0.5 * (nu + d) * jnp.log1p(maha / nu)
        )


def fit_gaussian(
    draws: jax.Array | np.ndarray, *, inflate: float = 1.2, df: float | None = None
) -> GaussianProposal:
    """A Gaussian (or Student-t) proposal fitted to ``draws`` (mean, ``inflate``-scaled covariance).

    Parameters
    ----------
    draws
        ``(n, dim)`` draws of ``z`` (e.g. a pilot run's ``positions.reshape(-1, dim)``),
        or ``(chains, draws, dim)``.
    inflate
        Factor on the standard deviations (> 1 gives IMH the heavier tails it needs).
    df
        Student-t degrees of freedom (``None``: normal).
    """
    x = np.asarray(draws, dtype=float)
    x = x.reshape(-1, x.shape[-1]) if x.ndim == 3 else x
    if x.ndim != 2 or x.shape[0] < x.shape[1] + 1:
        raise ValueError(
            f"draws must have shape (n, dim) with n > dim, got {tuple(np.shape(draws))}."
        )
    cov = np.atleast_2d(np.cov(x, rowvar=False)) + 1e-9 * np.eye(x.shape[1])
    chol = inflate * np.linalg.cholesky(cov)
    return GaussianProposal(jnp.asarray(x.mean(axis=0)), jnp.asarray(chol), df)


def _unconstrain_fn(model: pm.Model):
    """JAX map from the free variables' constrained values (in model order) to the flat ``z``."""
    from pymc.logprob.utils import replace_rvs_by_values
    from pymc.sampling.jax import get_jaxified_graph

    free = list(model.free_RVs)
    values = [rv.type(name=f"{rv.name}_theta") for rv in free]
    forward = []
    for rv in free:
        transform = model.rvs_to_transforms.get(rv)
        forward.append(rv if transform is None else transform.forward(rv, *rv.owner.inputs))
    forward = replace_rvs_by_values(forward, rvs_to_values=dict(zip(free, values, strict=True)))
    graph = get_jaxified_graph(inputs=values, outputs=forward)

    def unconstrain(parts: list[jax.Array]) -> jax.Array:
        return jnp.concatenate([jnp.ravel(p) for p in graph(*parts)])

    return unconstrain


@dataclass(frozen=True, eq=False)
class NPEProposal:
    r"""An NPE posterior :math:`q(\theta \mid x_{obs})` as a density on a model's ``z``.

    Build it with :func:`npe_proposal`.
    """

    estimator: Any
    x_obs: jax.Array
    names: tuple[str, ...]
    theta_of_z: Any  # z (dim,) -> theta (d,) in the estimator's spec order
    z_of_theta: Any  # theta (d,) -> z (dim,)

    def sample(self, rng_key: jax.Array, n: int) -> jax.Array:
        """``(n, dim)`` draws of ``z`` (NaN rows where ``q`` leaked outside the support)."""
        theta = self.estimator.sample(rng_key, self.x_obs, n)
        theta = theta.astype(jnp.result_type(float))
        return jax.vmap(self.z_of_theta)(theta)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log q(theta(z) | x_obs) + log|det d theta / d z|``, ``z`` of shape ``(..., dim)``."""
        z = jnp.asarray(z)
        flat = z.reshape(-1, z.shape[-1])

        def one(zi):
            theta = self.theta_of_z(zi)
            _, log_det = jnp.linalg.slogdet(jax.jacfwd(self.theta_of_z)(zi))
            lq = self.estimator.log_prob(self.x_obs, theta.astype(self.estimator.dtype))
            return lq.astype(zi.dtype) + log_det

        return jax.vmap(one)(flat).reshape(z.shape[:-1])


def npe_proposal(estimator, x_obs, model: pm.Model | None = None) -> NPEProposal:
    """Use an NPE estimator as the IMH proposal for ``model`` (default: the context model).

    Parameters
    ----------
    estimator
        A :class:`pymc_sbi.Estimator` with ``kind == "npe"``.
    x_obs
        The observation to condition on (shape ``estimator.x_shape``).
    model
        A model whose free variables are exactly the estimator's parameters
        (same names and shapes; e.g. the prior model with a ``NeuralLikelihood``
        or the exact likelihood attached).

    Raises
    ------
    TypeError
        If ``estimator`` is not an NPE.
    ValueError
        If the model's free variables differ from the estimator's parameters.
    """
    if getattr(estimator, "kind", None) != "npe":
        raise TypeError(
            "npe_proposal needs an NPE estimator (kind 'npe'), got kind "
            f"{getattr(estimator, 'kind', None)!r}."
        )
    model = pm.modelcontext(model)
    spec = estimator.spec
    free = {
        rv.name: tuple(int(s) for s in model.eval_rv_shapes()[rv.name]) for rv in model.free_RVs
    }
    expected = dict(zip(spec.names, (tuple(s) for s in spec.shapes), strict=True))
    if free != expected:
        raise ValueError(
            "An NPE proposal needs the model's free variables to be exactly the estimator's "
            f"parameters: the model has {free}, the estimator {expected} (name: shape)."
        )
    x = jnp.asarray(x_obs)
    if x.shape != tuple(estimator.x_shape):
        raise ValueError(f"x_obs must have shape {tuple(estimator.x_shape)}, got {x.shape}.")
    jm = jax_model(model, var_names=list(spec.names))
    unconstrain = _unconstrain_fn(model)
    order = [rv.name for rv in model.free_RVs]

    def theta_of_z(z):
        values = jm.constrained_fn(z)
        return jnp.concatenate([jnp.ravel(values[n]) for n in spec.names])

    def z_of_theta(theta):
        parts = spec.unflatten(theta, xp=jnp)
        return unconstrain([jnp.reshape(parts[n], free[n]) for n in order])

    return NPEProposal(estimator, x, tuple(spec.names), theta_of_z, z_of_theta)
