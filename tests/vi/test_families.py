"""Variational families: densities of own draws vs log_prob, normalisation, moments, init.

No training here: flows get perturbed parameters so their densities are not Gaussian.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse import assert_cov_within_mcse, assert_mean_within_mcse

from pymc_sbi.vi import condition_family, make_family

SMALL_FLOW = {"num_transforms": 2, "hidden_features": 8, "activation": "tanh"}
LOC = np.array([0.5, -1.0])
SCALE = np.array([2.0, 0.5])


def _params(name, context_dim=0, noise=0.2):
    kw = dict(SMALL_FLOW, context_dim=context_dim) if name in ("maf", "nsf") else {}
    fam = make_family(name, 2, **kw)
    params = fam.init(jax.random.key(0), LOC, SCALE)
    if name == "gaussian":
        params["tril_raw"] = params["tril_raw"].at[1, 0].set(0.7)
    if name in ("maf", "nsf"):  # move the flow away from its identity initialisation
        params["tril_raw"] = params["tril_raw"].at[1, 0].set(0.7)  # and shear the outer affine
        leaves, tree = jax.tree.flatten(params["flow"])
        rng = np.random.default_rng(1)
        leaves = [leaf + noise * rng.normal(size=leaf.shape) for leaf in leaves]
        params["flow"] = jax.tree.unflatten(tree, leaves)
    return fam, params


@pytest.mark.parametrize("name", ["gaussian_diag", "gaussian", "maf", "nsf"])
def test_log_prob_of_own_draws(name):
    """log q from sample_and_log_prob equals log_prob at the same points (flows: the inverse)."""
    fam, params = _params(name)
    theta, log_q = fam.sample_and_log_prob(params, jax.random.key(2), 64)
    assert theta.shape == (64, 2) and log_q.shape == (64,)
    np.testing.assert_allclose(fam.log_prob(params, theta), log_q, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fam.log_prob(params, theta[0]), log_q[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gaussian_diag", "gaussian", "maf", "nsf"])
def test_density_normalises(name):
    """The trapezoid integral of q over a wide 2-D grid is 1 (perturbed flows included)."""
    fam, params = _params(name)
    g0 = np.linspace(LOC[0] - 30, LOC[0] + 30, 601)
    g1 = np.linspace(LOC[1] - 10, LOC[1] + 10, 401)
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1)
    dens = np.exp(np.asarray(jax.jit(fam.log_prob)(params, jnp.asarray(grid))))
    total = np.trapezoid(np.trapezoid(dens, g1, axis=1), g0)
    assert abs(total - 1.0) < 5e-3


@pytest.mark.parametrize("name", ["gaussian_diag", "maf", "nsf"])
def test_init_is_the_diagonal_gaussian(name):
    """At init every family is N(loc, diag(scale^2)); flows start at the identity."""
    fam = make_family(name, 2, **(SMALL_FLOW if name != "gaussian_diag" else {}))
    params = fam.init(jax.random.key(0), LOC, SCALE)
    theta = np.array([[0.0, 0.0], [3.0, -2.0]])
    expected = np.sum(
        -0.5 * ((theta - LOC) / SCALE) ** 2 - np.log(SCALE) - 0.5 * np.log(2 * np.pi), -1
    )
    np.testing.assert_allclose(fam.log_prob(params, theta), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gaussian", "maf", "nsf"])
def test_init_from_a_cholesky_factor(name):
    """A matrix scale L (warm-up of these families) gives N(loc, L L^T) at init."""
    fam = make_family(name, 2, **(SMALL_FLOW if name != "gaussian" else {}))
    chol = np.array([[2.0, 0.0], [0.7, 0.5]])
    params = fam.init(jax.random.key(0), LOC, chol)
    theta = np.array([[0.0, 0.0], [3.0, -2.0]])
    eps = np.linalg.solve(chol, (theta - LOC).T).T
    expected = np.sum(-0.5 * eps**2 - 0.5 * np.log(2 * np.pi), -1) - np.log(np.diag(chol)).sum()
    np.testing.assert_allclose(fam.log_prob(params, theta), expected, rtol=1e-5, atol=1e-5)


def test_gaussian_moments_from_draws():
    """Full-rank draws have mean loc and covariance L L^T within Monte-Carlo error."""
    fam, params = _params("gaussian")
    n = 20_000
    theta, _ = fam.sample_and_log_prob(params, jax.random.key(3), n)
    raw = np.asarray(params["tril_raw"])
    L = np.tril(raw, -1) + np.diag(np.exp(np.diag(raw)))
    cov = L @ L.T
    assert_mean_within_mcse(np.asarray(theta), LOC)
    assert_cov_within_mcse(np.asarray(theta), LOC, cov)


def test_conditional_flow_and_conditioning():
    """A conditional flow depends on its context; condition_family fixes one context."""
    fam, params = _params("maf", context_dim=3)
    ctx = jnp.array([0.3, -1.0, 2.0])
    theta = jnp.array([[0.1, 0.2], [1.0, -1.0]])
    a = fam.log_prob(params, theta, jnp.broadcast_to(ctx, (2, 3)))
    b = fam.log_prob(params, theta, jnp.broadcast_to(-ctx, (2, 3)))
    assert np.all(np.abs(np.asarray(a - b)) > 1e-4)
    fixed = condition_family(fam, ctx)
    np.testing.assert_allclose(fixed.log_prob(params, theta), a, rtol=1e-6)
    draws, log_q = fixed.sample_and_log_prob(params, jax.random.key(0), 5)
    np.testing.assert_allclose(fixed.log_prob(params, draws), log_q, rtol=1e-4, atol=1e-4)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="Unknown family"):
        make_family("iaf", 2)
    with pytest.raises(ValueError, match="takes no options"):
        make_family("gaussian", 2, num_transforms=2)
    fam = make_family("gaussian_diag", 2)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        fam.init(jax.random.key(0), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="unconditional"):
        fam.sample_and_log_prob(fam.init(jax.random.key(0), 0.0, 1.0), jax.random.key(0), 2, 1.0)
    cond = make_family("maf", 2, context_dim=2, **SMALL_FLOW)
    with pytest.raises(ValueError, match="conditional"):
        cond.sample_and_log_prob(cond.init(jax.random.key(0), 0.0, 1.0), jax.random.key(0), 2)
