"""param_spec / draw_prior / prior_draw_fn / prior_initvals on PyMC prior models."""

import math

import numpy as np
import pymc as pm
import pytest
from mcse import assert_cov_within_mcse, assert_mean_within_mcse

import pymc_sbi.prior as prior_mod
from pymc_sbi.prior import draw_prior, param_spec, prior_draw_fn, prior_initvals

INF = math.inf


@pytest.fixture(scope="module")
def bounded_model():
    lo, hi = np.array([0.0, -1.0, 0.1]), np.array([1.0, 5.0, 0.3])
    with pm.Model(coords={"grp": ["g0", "g1"], "cell": ["c0", "c1", "c2"]}) as m:
        pm.Normal("mu", 0, 1)
        pm.HalfNormal("sigma", 1, dims="grp")
        pm.Uniform("u", -1, 2)
        pm.Beta("p", 2, 3)
        pm.Uniform("w", lo, hi, dims="cell")
        pm.Normal("M", 0, 1, shape=(2, 2))
    return m


@pytest.fixture(scope="module")
def bounded_spec(bounded_model):
    return param_spec(bounded_model)


@pytest.fixture(scope="module")
def hier_model():
    with pm.Model(coords={"subject": ["s0", "s1", "s2"]}) as m:
        mu_g = pm.Normal("mu_g", 0, 1)
        pm.Normal("mu", mu_g, 0.5, dims="subject")
        pm.HalfNormal("sigma", 1)
    return m


# ------------------------------------------------------------------ param_spec
def test_param_spec_names_shapes_bounds_dims(bounded_spec):
    spec = bounded_spec
    assert spec.names == ("mu", "sigma", "u", "p", "w", "M")
    assert spec.shapes == ((), (2,), (), (), (3,), (2, 2))
    assert spec.dim == 1 + 2 + 1 + 1 + 3 + 4
    sl = spec.slices
    lower, upper = np.array(spec.lower), np.array(spec.upper)
    expected = {
        "mu": ([-INF], [INF]),
        "sigma": ([0.0, 0.0], [INF, INF]),
        "u": ([-1.0], [2.0]),
        "p": ([0.0], [1.0]),
        "w": ([0.0, -1.0, 0.1], [1.0, 5.0, 0.3]),
        "M": ([-INF] * 4, [INF] * 4),
    }
    for name, (lo, hi) in expected.items():
        # bounds come out of a transform's backward map: allow a few ulps
        np.testing.assert_allclose(lower[sl[name]], lo, rtol=1e-12, atol=0)
        np.testing.assert_allclose(upper[sl[name]], hi, rtol=1e-12, atol=0)
    assert spec.dims == (None, ("grp",), None, None, ("cell",), None)
    assert dict(spec.coords) == {"grp": ("g0", "g1"), "cell": ("c0", "c1", "c2")}


def test_param_spec_coords_only_for_used_dims():
    with pm.Model(coords={"used": [1, 2], "unused": ["a"]}) as m:
        pm.Normal("x", dims="used")
    spec = param_spec(m)
    assert [k for k, _ in spec.coords] == ["used"]


def test_param_spec_subset_in_given_order(bounded_model):
    spec = param_spec(bounded_model, names=["w", "mu"])
    assert spec.names == ("w", "mu")
    assert spec.shapes == ((3,), ())
    np.testing.assert_allclose(spec.lower, [0.0, -1.0, 0.1, -INF], rtol=1e-12)


def test_param_spec_unknown_name(bounded_model):
    with pytest.raises(ValueError, match=r"Unknown parameter name\(s\) \['nope'\]"):
        param_spec(bounded_model, names=["mu", "nope"])


def test_param_spec_discrete_free_variable():
    with pm.Model() as m:
        pm.Normal("mu", 0, 1)
        pm.Poisson("k", 3.0)
    with pytest.raises(ValueError, match=r"'k' is discrete"):
        param_spec(m)
    with pytest.raises(ValueError, match=r"'k' is discrete"):
        draw_prior(m, 5, seed=0)
    # the continuous subset alone is fine
    assert param_spec(m, names=["mu"]).names == ("mu",)


def test_param_spec_no_free_variables():
    with pm.Model() as m:
        pm.Data("d", np.zeros(2))
    with pytest.raises(ValueError, match="no free random variables"):
        param_spec(m)


def test_bounds_that_depend_on_another_variable_contain_the_prior():
    # u ~ Uniform(0, s) with s random: the upper bound is not a constant, so it must not
    # be read off one random draw of s (the docstring promises an unbounded side).
    with pm.Model() as m:
        s = pm.HalfNormal("s", 1)
        pm.Uniform("u", 0, s)
    spec = param_spec(m)
    assert spec.upper[spec.slices["u"]][0] == INF
    theta = draw_prior(m, 2000, seed=3)
    assert spec.in_support(theta).all()


# ------------------------------------------------------------------ draw_prior
def test_draw_prior_shape_seed_and_bounds(bounded_model, bounded_spec):
    spec = bounded_spec
    a = draw_prior(bounded_model, 300, seed=11)
    assert a.shape == (300, spec.dim)
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, draw_prior(bounded_model, 300, seed=11))
    b = draw_prior(bounded_model, 300, seed=12)
    assert not np.any(np.all(a == b, axis=0))  # every column differs somewhere
    assert spec.in_support(a).all() and spec.in_support(b).all()
    # rows are distinct joint draws (not one draw broadcast over the batch)
    assert np.unique(a, axis=0).shape[0] == 300


def test_draw_prior_column_order_follows_spec(bounded_model, bounded_spec):
    spec = bounded_spec
    theta = draw_prior(bounded_model, 500, seed=5)
    vals = spec.unflatten(theta)
    # w's three elements live on disjoint-ish intervals [0,1], [-1,5], [0.1,0.3]
    w = vals["w"]
    assert (w[:, 2] >= 0.1).all() and (w[:, 2] <= 0.3).all()
    assert (w[:, 1] < 0).any() and (w[:, 1] > 1).any()
    assert (vals["sigma"] > 0).all() and (vals["mu"] < 0).any()
    # subset: columns follow the order of `names`
    sub = draw_prior(bounded_model, 200, seed=5, names=["p", "u"])
    assert sub.shape == (200, 2)
    assert ((sub[:, 0] > 0) & (sub[:, 0] < 1)).all()
    assert (sub[:, 1] < 0).any()  # u ~ U(-1, 2) takes negative values, p never does


def test_draw_prior_rejects_nonpositive_n(bounded_model):
    for n in (0, -3):
        with pytest.raises(ValueError, match="positive"):
            draw_prior(bounded_model, n, seed=0)


def test_hierarchical_prior_moments(hier_model):
    n = 20_000
    spec = param_spec(hier_model)
    assert spec.names == ("mu_g", "mu", "sigma") and spec.dim == 5
    assert spec.dims == (None, ("subject",), None)
    theta = draw_prior(hier_model, n, seed=2024)
    assert (theta[:, 4] > 0).all()
    # Exact moments of (mu_g, mu_0, mu_1, mu_2, sigma): mu_g ~ N(0, 1), mu_i = mu_g + 0.5 e_i
    # (so Var mu_i = 1.25, Cov(mu_g, mu_i) = Cov(mu_i, mu_j) = Var mu_g = 1: each row's mu
    # shares that row's mu_g, the 0.5-noise is independent per subject), sigma ~ HalfNormal(1)
    # (mean sqrt(2 / pi), variance 1 - 2 / pi) independent of the mu block. Means and every
    # covariance entry within 4 MCSE of n = 20,000 i.i.d. draws (the seed is fixed).
    mean = np.array([0.0, 0.0, 0.0, 0.0, math.sqrt(2 / math.pi)])
    cov = np.zeros((5, 5))
    cov[:4, :4] = 1.0
    cov[[1, 2, 3], [1, 2, 3]] = 1.25
    cov[4, 4] = 1 - 2 / math.pi
    assert_mean_within_mcse(theta, mean)
    assert_cov_within_mcse(theta, mean, cov)


# ------------------------------------------------- one compiled, vectorised function
def test_prior_draw_fn_fresh_draws_and_seeded_stream(hier_model):
    fn = prior_draw_fn(hier_model, 6, seed=7)
    a, b = fn(), fn()
    assert a.shape == b.shape == (6, 5)
    assert not np.any(np.all(a == b, axis=0))  # successive calls: fresh draws
    again = prior_draw_fn(hier_model, 6, seed=7)
    np.testing.assert_array_equal(again(), a)  # the stream is fixed by the seed
    np.testing.assert_array_equal(again(), b)
    # draw_prior is the first call of that stream
    np.testing.assert_array_equal(draw_prior(hier_model, 6, seed=7), a)


def test_prior_draw_fn_streams_are_independent_of_each_other(hier_model):
    # Two draw functions with the same seed must give the same stream even when called
    # alternately (they must not share random-generator state with each other or the model).
    f1 = prior_draw_fn(hier_model, 4, seed=3)
    f2 = prior_draw_fn(hier_model, 4, seed=3)
    a1, b1 = f1(), f2()
    a2, b2 = f1(), f2()
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)


def test_draw_prior_is_one_vectorised_compiled_call(hier_model, monkeypatch):
    """No Python loop over pm.draw: one compile, one call returning (n, ...) arrays."""

    def forbidden(*args, **kwargs):
        raise AssertionError("draw_prior must not loop over pm.draw / sample_prior_predictive")

    monkeypatch.setattr(pm, "draw", forbidden)
    monkeypatch.setattr(pm, "sample_prior_predictive", forbidden)

    compiled, calls, raw_shapes = [], [], []
    real_compile = prior_mod.compile_pymc

    def counting_compile(*args, **kwargs):
        fn = real_compile(*args, **kwargs)
        compiled.append(fn)

        def wrapped(*a, **k):
            out = fn(*a, **k)
            calls.append(1)
            raw_shapes.append([np.shape(o) for o in out])
            return out

        return wrapped

    monkeypatch.setattr(prior_mod, "compile_pymc", counting_compile)
    n = 100_000
    theta = draw_prior(hier_model, n, seed=0)
    assert theta.shape == (n, 5)
    assert len(compiled) == 1 and len(calls) == 1
    # the single call already returns the whole batch for every variable
    assert raw_shapes == [[(n,), (n, 3), (n,)]]


# ------------------------------------------------------------------ prior_initvals
def test_prior_initvals(bounded_model, bounded_spec):
    spec = bounded_spec
    inits = prior_initvals(bounded_model, chains=4, seed=1)
    assert isinstance(inits, list) and len(inits) == 4
    for init in inits:
        assert list(init) == list(spec.names)
        for name, shape in zip(spec.names, spec.shapes, strict=True):
            assert np.shape(init[name]) == shape
        assert spec.in_support(spec.flatten(init))
    # independent draws per chain, reproducible by seed, equal to the prior draws
    flat = np.stack([spec.flatten(i) for i in inits])
    assert np.unique(flat, axis=0).shape[0] == 4
    # (and hence reproducible by seed, as draw_prior is)
    np.testing.assert_array_equal(flat, draw_prior(bounded_model, 4, seed=1))


def test_prior_initvals_subset(hier_model):
    inits = prior_initvals(hier_model, chains=2, seed=0, names=["sigma"])
    assert [list(i) for i in inits] == [["sigma"], ["sigma"]]
    assert all(float(i["sigma"]) > 0 for i in inits)
