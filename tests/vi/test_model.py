"""fit_vi on a pm.Model: DataTree names/dims/coords (transforms undone), reproducibility,
MAP against pm.find_MAP, evaluate(), and bad input."""

from __future__ import annotations

import functools

import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

import pymc_sbi as ps
from pymc_sbi.vi import VIDiagnostics, fit_vi

Y = np.array([0.8, 1.9, 1.1, 2.4, 1.6, 0.7, 1.3, 2.0])


def make_model():
    with pm.Model(coords={"group": ["a", "b"]}) as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        sigma = pm.HalfNormal("sigma", 2.0)
        offset = pm.Normal("offset", 0.0, 1.0, dims="group")
        pm.Deterministic("mu_group", mu + offset, dims="group")
        pm.Normal("y", mu, sigma, observed=Y)
    return model


@functools.cache
def fitted(seed=0):
    return fit_vi(
        make_model(),
        ps.vi.VIConfig(
            family="gaussian",
            num_particles=32,
            learning_rate=2e-2,
            lr_decay=0.997,
            max_iters=500,
            check_convergence=False,
        ),
        seed=seed,
        progressbar=False,
    )


def test_datatree_names_dims_coords():
    idata = fitted().sample(draws=300, seed=1)
    post = idata.posterior
    assert set(post.data_vars) == {"mu", "sigma", "offset", "mu_group"}
    assert "sigma_log__" not in post.data_vars
    assert post["sigma"].dims == ("chain", "draw") and post.sizes["chain"] == 1
    assert post.sizes["draw"] == 300
    assert post["offset"].dims == ("chain", "draw", "group")
    assert list(post["group"].values) == ["a", "b"]
    assert np.all(post["sigma"].values > 0)  # the log transform is undone
    np.testing.assert_allclose(
        post["mu_group"].values, post["mu"].values[..., None] + post["offset"].values
    )
    np.testing.assert_array_equal(idata.observed_data["y"].values, Y)
    assert set(idata.sample_stats.data_vars) >= {"lp", "log_q"}


# Allowances of the 500-step Gaussian fit (not Monte Carlo), in the units of each quantity:
# the posterior mean of mu is the sample mean pulled 0.2 % of the way to the prior mean 0
# (N(0, 5^2) prior, sigma^2 / n ~ 0.05), the rest is where the optimiser stopped (measured
# 0.05 se); offset's N(0, 1) is matched to within 0.02 (mean) and 0.045 (sd); 4 MCSE of
# 4,000 draws add 0.065 (mean) and 0.045 (sd): the sd bound, 0.095, stays inside 10 %.
MU_MEAN_ALLOWANCE = 0.25  # in standard errors of Y's mean, se = sd(Y) / sqrt(8) = 0.21
OFFSET_ALLOWANCE = 0.05  # on offset's mean 0 and sd 1


def test_posterior_is_sensible():
    """The sigma-integrated posterior of mu is a Student-t centred near the sample mean."""
    post = fitted().sample(draws=4000, seed=2).posterior
    mu = post["mu"].values.ravel()  # 4,000 i.i.d. draws of q
    se = Y.std(ddof=1) / np.sqrt(len(Y))
    assert_mean_within_mcse(mu, Y.mean(), allowance=MU_MEAN_ALLOWANCE * se)
    assert 0.7 * se < mu.std() < 1.6 * se  # t_7 sd is 1.18 se; Gaussian q, HalfNormal prior
    offset = post["offset"].values.reshape(-1, 2)  # unaffected by the data: N(0, 1)
    assert_mean_within_mcse(offset, 0.0, allowance=OFFSET_ALLOWANCE)
    assert_sd_within_mcse(offset, 1.0, allowance=OFFSET_ALLOWANCE)


def test_same_seed_same_result():
    a, b = (
        fitted(0),
        fit_vi(
            make_model(),
            ps.vi.VIConfig(
                family="gaussian",
                num_particles=32,
                learning_rate=2e-2,
                lr_decay=0.997,
                max_iters=500,
                check_convergence=False,
            ),
            seed=0,
            progressbar=False,
        ),
    )
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    np.testing.assert_array_equal(
        a.sample(50, seed=3).posterior["mu"].values, b.sample(50, seed=3).posterior["mu"].values
    )
    assert not np.array_equal(
        a.sample(50, seed=3).posterior["mu"].values, a.sample(50, seed=4).posterior["mu"].values
    )


def test_map_matches_find_map():
    est = fitted().map(seed=0)
    with make_model():
        ref = pm.find_MAP(progressbar=False, jitter=False, return_inferencedata=True)
    for name in ("mu", "sigma", "offset"):
        value = ref["posterior"][name].values[0, 0]  # (chain, draw, ...) of one point
        np.testing.assert_allclose(est[name], value, atol=1e-3, rtol=1e-3)


def test_evaluate():
    diag = fitted().evaluate(draws=2000, seed=0)
    assert isinstance(diag, VIDiagnostics)
    assert diag.khat < 0.7 and diag.ok
    assert diag.correlation > 0.9
    assert diag.elbo <= diag.log_evidence + 1e-9  # Jensen, holds draw by draw
    assert 0 < diag.ess <= 2000


def test_bad_input():
    model = make_model()
    with pytest.raises(ValueError, match="divergence must be one of"):
        ps.vi.VIConfig(divergence="kl")
    with pytest.raises(ValueError, match="stl applies"):
        ps.vi.VIConfig(divergence="fkl", stl=True)
    with pytest.raises(ValueError, match="max_iters"):
        ps.vi.VIConfig(max_iters=0)
    with pytest.raises(TypeError, match="VIConfig"):
        fit_vi(model, {"family": "maf"}, progressbar=False)
    with pytest.raises(ValueError, match="dim=D"):
        fit_vi(logdensity_fn=lambda t: -t @ t, progressbar=False)
    with pytest.raises(ValueError, match="either a model or a logdensity_fn"):
        fit_vi(model, logdensity_fn=lambda t: -t @ t, dim=1, progressbar=False)
    with pytest.raises(ValueError, match="draws"):
        fitted().sample(draws=0)
