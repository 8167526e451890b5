"""A pm.Model as JAX functions of one flat unconstrained vector."""

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest

from pymc_sbi.terms.jaxmodel import jax_model, prior_positions, to_datatree


@pytest.fixture(scope="module")
def model():
    with pm.Model(coords={"g": ["a", "b", "c"]}) as m:
        mu = pm.Normal("mu", 0, 1)
        s = pm.HalfNormal("s", 1, dims="g")
        pm.Uniform("u", lower=mu - 1, upper=mu + 1)  # bounds depend on another variable
        pm.Deterministic("d", 2 * mu)
        pm.Normal("y", mu, s.sum(), observed=np.array([0.1, 0.3]))
    return m


def test_logdensity_equals_pymc_logp_with_jacobians(model):
    jm = jax_model(model)
    assert jm.value_names == ("mu", "s_log__", "u_interval__")
    assert jm.dim == 5
    ref = model.compile_logp()
    for z in prior_positions(model, 5, seed=1):
        point = dict(zip(jm.value_names, map(np.asarray, jm.unravel(jnp.asarray(z))), strict=True))
        np.testing.assert_allclose(jm.logdensity_fn(jnp.asarray(z)), ref(point), rtol=1e-10)


def test_prior_positions_map_back_to_prior_draws(model):
    jm = jax_model(model)
    z = prior_positions(model, 4000, seed=2)
    assert z.shape == (4000, 5)
    np.testing.assert_array_equal(z, prior_positions(model, 4000, seed=2))
    values = jax.vmap(jm.constrained_fn)(jnp.asarray(z))
    mu, s, u = (np.asarray(values[k]) for k in ("mu", "s", "u"))
    assert np.all(s > 0) and np.all(np.abs(u - mu) < 1)
    np.testing.assert_allclose(values["d"], 2 * mu)
    # moments of the prior: mu ~ N(0, 1), s ~ HalfNormal(1) (mean sqrt(2/pi)), u - mu ~ U(-1, 1)
    se = 1 / np.sqrt(4000)
    assert abs(mu.mean()) < 4 * se and abs(mu.std() - 1) < 4 * se
    assert abs(s.mean() - np.sqrt(2 / np.pi)) < 4 * 0.6 * se
    assert abs((u - mu).mean()) < 4 * 0.58 * se


def test_to_datatree_has_pymc_names_dims_and_groups(model):
    jm = jax_model(model)
    pos = jnp.asarray(prior_positions(model, 6, seed=3)).reshape(2, 3, 5)
    lp = jax.vmap(jax.vmap(jm.logdensity_fn))(pos)
    dt = to_datatree(jm, pos, {"lp": lp})
    post = dt.posterior
    assert set(post.data_vars) == {"mu", "s", "u", "d"}
    assert post["s"].dims == ("chain", "draw", "g")
    assert list(post["g"].values) == ["a", "b", "c"]
    np.testing.assert_array_equal(dt.observed_data["y"].values, [0.1, 0.3])
    np.testing.assert_allclose(dt.sample_stats["lp"].values, lp)
    with pytest.raises(ValueError, match=r"\(chains, draws, 5\)"):
        to_datatree(jm, pos[0])


def test_subset_and_errors(model):
    jm = jax_model(model, var_names=["mu", "d"])
    assert set(jm.constrained_fn(jnp.zeros(5))) == {"mu", "d"}
    with pytest.raises(ValueError, match="Unknown variable"):
        jax_model(model, var_names=["nope"])
    with pm.Model() as discrete:
        pm.Poisson("k", 3)
    with pytest.raises(ValueError, match="discrete"):
        jax_model(discrete)
