"""Ratio-estimation classifiers: broadcasting, vmap, dtypes, gradients, registry round trip."""

from __future__ import annotations

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pymc_sbi.nn import (
    NETWORKS,
    MLPClassifier,
    ResidualClassifier,
    mlp_classifier,
    network_config,
    network_from_config,
    resnet_classifier,
)

D, X_DIM = 3, 4

NETS = {
    "mlp": lambda: mlp_classifier(hidden_features=16, activation="tanh"),
    "resnet": lambda: resnet_classifier(hidden_features=16, num_blocks=2),
    "resnet_ln": lambda: resnet_classifier(hidden_features=16, layer_norm=True, activation="gelu"),
}


@functools.cache
def build(name, seed=0):
    """Module, params and a jitted ``apply`` (eager flax on a busy CPU compiles op by op)."""
    module = NETS[name]().clone(features=X_DIM)
    params = jax.jit(module.init)(jax.random.key(seed), jnp.zeros(D), jnp.zeros(X_DIM))
    return module, params, jax.jit(module.apply)


def inputs(rng, *lead):
    theta = rng.standard_normal((*lead, D)).astype(np.float32)
    x = rng.standard_normal((*lead, X_DIM)).astype(np.float32)
    return theta, x


@pytest.mark.parametrize("name", list(NETS))
def test_broadcasting_matches_explicit_pairs(name):
    """Leading axes broadcast; every entry equals the logit of its own pair."""
    _module, params, apply = build(name)
    rng = np.random.default_rng(0)
    theta, x = inputs(rng, 5)
    out = apply(params, theta, x)
    assert out.shape == (5,) and out.dtype == jnp.float32
    single = np.array([apply(params, theta[i], x[i]) for i in range(5)])
    np.testing.assert_allclose(out, single, rtol=1e-5, atol=1e-6)
    # one x against a grid of theta, and a (2, 5) batch from (2, 1) x (5,)
    grid = apply(params, theta, x[0])
    np.testing.assert_allclose(grid, [apply(params, t, x[0]) for t in theta], rtol=1e-5)
    theta2 = rng.standard_normal((2, 1, D)).astype(np.float32)
    out2 = apply(params, theta2, x)
    assert out2.shape == (2, 5)
    np.testing.assert_allclose(out2[1], apply(params, theta2[1, 0], x), rtol=1e-5)


@pytest.mark.parametrize("name", list(NETS))
def test_vmap_and_jit_agree(name):
    module, params, apply = build(name)
    theta, x = inputs(np.random.default_rng(1), 7, 3)
    batched = apply(params, theta, x)
    vmapped = jax.jit(jax.vmap(jax.vmap(lambda t, v: module.apply(params, t, v))))(theta, x)
    assert vmapped.shape == (7, 3)
    np.testing.assert_allclose(batched, vmapped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(NETS))
def test_depends_on_both_inputs_with_finite_gradients(name):
    """A classifier that ignored theta or x could not estimate a ratio."""
    module, params, apply = build(name)
    # perturb away from the (near-identity) initialisation of the residual blocks
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype), params)
    theta, x = inputs(rng, 4)
    f = lambda t, v: jnp.sum(module.apply(params, t, v))
    g_theta, g_x = jax.grad(f, argnums=(0, 1))(theta, x)
    for g in (g_theta, g_x):
        assert np.all(np.isfinite(g)) and np.min(np.linalg.norm(g, axis=-1)) > 1e-4
    # gradient against central finite differences in float32 (smooth activations only)
    if NETS[name]().activation != "relu":
        eps = 1e-2
        e = np.zeros_like(theta)
        e[:, 1] = eps
        fd = (apply(params, theta + e, x) - apply(params, theta - e, x)) / (2 * eps)
        np.testing.assert_allclose(g_theta[:, 1], fd, rtol=2e-2, atol=2e-3)


def test_float64_inputs_compute_in_float64(x64):
    _module, params, apply = build("mlp")
    theta, x = inputs(np.random.default_rng(3), 6)
    out = apply(params, theta.astype(np.float64), x.astype(np.float64))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, apply(params, theta, x), rtol=1e-5, atol=1e-6)


def test_residual_blocks_start_near_identity():
    """At init each block adds ~0, so the residual net is ~ lift -> act -> head."""
    _module, params, apply = build("resnet")
    theta, x = inputs(np.random.default_rng(4), 8)
    p = params["params"]
    h = jnp.concatenate([theta, x], -1) @ p["lift"]["kernel"] + p["lift"]["bias"]
    expected = nn.relu(h) @ p["logit"]["kernel"][:, 0] + p["logit"]["bias"][0]
    np.testing.assert_allclose(apply(params, theta, x), expected, atol=0.02)
    assert np.max(np.abs(p["block_0_1"]["kernel"])) <= 1e-3


def test_linear_classifier_and_bad_activation():
    module = MLPClassifier(num_hidden=0)
    params = module.init(jax.random.key(0), jnp.zeros(D), jnp.zeros(X_DIM))
    assert set(params["params"]) == {"logit"}
    with pytest.raises(ValueError, match="unknown activation"):
        MLPClassifier(activation="swish").init(jax.random.key(0), jnp.zeros(D), jnp.zeros(1))


@pytest.mark.parametrize("name", list(NETS))
def test_config_round_trip_through_registry(name):
    module, params, apply = build(name)
    definition = json.loads(json.dumps(network_config(module)))
    assert definition["family"] in {"mlp_classifier", "resnet_classifier"}
    assert NETWORKS[definition["family"]] is type(module)
    rebuilt = network_from_config(definition)
    assert rebuilt == module
    theta, x = inputs(np.random.default_rng(5), 3)
    np.testing.assert_array_equal(apply(params, theta, x), jax.jit(rebuilt.apply)(params, theta, x))


def test_factories_have_sbi_defaults():
    assert mlp_classifier() == MLPClassifier(hidden_features=50, num_hidden=2, activation="relu")
    r = resnet_classifier()
    assert isinstance(r, ResidualClassifier)
    assert (r.hidden_features, r.num_blocks, r.activation, r.layer_norm) == (50, 2, "relu", False)
