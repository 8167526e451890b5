"""MADE: exact autoregressive structure, context dependence, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pymc_sbi.nn.made import MADE, get_activation, unit_softplus

C = 2  # context dimension


def made_and_params(d, num_params=3, num_hidden=2, seed=0):
    # Random (not zero) output layer and tanh units: every allowed connection is
    # active, so "no dependence" below is a property of the masks, not of dead units.
    made = MADE(
        features=d,
        num_params=num_params,
        hidden_features=12,
        num_hidden=num_hidden,
        activation="tanh",
        zero_init_output=False,
    )
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(d), dtype=jnp.float32)
    context = jnp.asarray(rng.standard_normal(C), dtype=jnp.float32)
    params = jax.jit(made.init)(jax.random.key(seed), x, context)
    return made, params, x, context


@pytest.mark.parametrize("num_hidden", [1, 3])
@pytest.mark.parametrize("d", [1, 2, 5])
def test_output_i_depends_only_on_inputs_before_i(d, num_hidden):
    made, params, x, context = made_and_params(d, num_hidden=num_hidden)
    fn = jax.jit(lambda x, c: made.apply(params, x, c))
    jac_x = np.asarray(jax.jacobian(fn, argnums=0)(x, context))  # (d, P, d)
    jac_c = np.asarray(jax.jacobian(fn, argnums=1)(x, context))  # (d, P, C)
    assert jac_x.shape == (d, 3, d)
    for i in range(d):
        for j in range(d):
            if j >= i:
                assert np.all(jac_x[i, :, j] == 0.0), (i, j)  # exactly zero, by masking
            else:
                assert np.any(jac_x[i, :, j] != 0.0), (i, j)  # allowed links are used
        # Every output, the first included, depends on the context.
        assert np.any(jac_c[i] != 0.0), i


def test_first_output_is_constant_in_x_for_d1():
    made, params, _, context = made_and_params(1)
    xs = jnp.linspace(-3.0, 3.0, 7)[:, None]
    out = jax.jit(made.apply)(params, xs, jnp.broadcast_to(context, (7, C)))
    np.testing.assert_array_equal(out, jnp.broadcast_to(out[0], out.shape))


def test_shapes_and_broadcasting():
    made, params, _, _ = made_and_params(4, num_params=5)
    x = jnp.ones((3, 2, 4))
    c = jnp.ones((3, 2, C))
    apply = jax.jit(made.apply)
    assert apply(params, x, c).shape == (3, 2, 4, 5)
    # One context for a batch of x is broadcast.
    np.testing.assert_allclose(apply(params, x, c[0, 0]), apply(params, x, c), rtol=1e-6)
    with pytest.raises(ValueError, match="features"):
        made.apply(params, jnp.ones((3, 5)), jnp.ones((3, C)))


def test_zero_init_output_is_zero():
    made = MADE(features=3, num_params=2, hidden_features=8)
    params = jax.jit(made.init)(jax.random.key(0), jnp.ones(3), jnp.ones(C))
    out = jax.jit(made.apply)(params, jnp.arange(3.0), jnp.ones(C))
    np.testing.assert_array_equal(out, 0.0)


def test_unit_softplus_and_activation_names():
    np.testing.assert_allclose(unit_softplus(jnp.zeros(())), 1.0, rtol=1e-6)
    assert float(unit_softplus(jnp.array(-50.0), 1e-3)) >= 1e-3
    for name in ["relu", "tanh", "gelu", "silu", "elu"]:
        assert callable(get_activation(name))
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("swish2")
