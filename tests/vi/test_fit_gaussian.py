r"""Every family x divergence on a correlated 2-D Gaussian target N(MU, SIGMA).

What each fit must recover follows from what the family can represent:

- full-rank Gaussian and flows contain the target, so every divergence's optimum
  is the target itself: mean MU, covariance SIGMA;
- the mean-field Gaussian q = N(m, diag(s^2)) has mean MU for every divergence
  (by symmetry), and variances
  reverse KL: s_i^2 = 1 / (SIGMA^-1)_ii (the conditional variances);
  forward KL: s_i^2 = SIGMA_ii (the marginal variances);
  IW (K > 1) and alpha < 1 cover more mass than reverse KL: larger variances
  (with K = 8 groups they come close to, and may pass, the marginals, since
  the best importance proposal is over-dispersed; no closed form, so only
  the direction is asserted).

Tolerances: Gaussian families are checked on their parameters (no Monte-Carlo
error), against the optimisation allowances below; flows on 160 000 draws, with
4 Monte-Carlo standard errors (tests/mcse.py) on top of the same allowances.

Under fkl/iw/alpha flows start with fit_vi's Gaussian pre-fit of their outer
affine (500 steps at most; off under rkl). Without it NSF under fKL/IW/alpha
ended 10-40 % too wide here (fKL [[1.27, 0.99], [0.99, 2.59]] at 600 steps):
the warm-up draws are 3 times wider than the target, the spline absorbed the
location and scale inside its interval, and the affine kept the wide scale
that the spline's identity tails inherit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse import assert_cov_within_mcse, assert_mean_within_mcse

import pymc_sbi as ps
from pymc_sbi.vi import fit_vi

MU = np.array([1.0, -2.0])
SIGMA = np.array([[1.0, 0.8], [0.8, 2.0]])
PREC = np.linalg.inv(SIGMA)
SD = np.sqrt(np.diag(SIGMA))
# The flows' draws are heavier-tailed than the target (NSF under rKL: kurtosis ~9 on theta_0,
# so the MCSE of its variance is ~2x the Gaussian formula's); 160,000 draws keep 4 MCSE
# below 0.045 on every (co)variance entry and 0.015 on the means, so that allowance + 4 MCSE
# stays inside the former bound (allowance + 4 Gaussian-formula SEs of 20,000 draws).
N_DRAWS = 160_000
SMALL_FLOW = {"num_transforms": 2, "hidden_features": 16}
# Optimisation allowances: what 600 stochastic-gradient steps (64 particles, decaying
# learning rate) leave between the fit and the divergence's exact optimum. Not Monte Carlo:
# they hold for the Gaussian families' parameters too.
VI_MEAN_ALLOWANCE = 0.1  # mean error, in target sds
VI_COV_ALLOWANCE = 0.1  # (co)variance error, relative to sqrt(SIGMA_ii SIGMA_jj)


def logdensity_fn(theta):
    d = theta - MU
    return -0.5 * d @ jnp.asarray(PREC) @ d


@functools.cache
def fitted(family, divergence, max_iters=600):
    flow = family in ("maf", "nsf")
    return fit_vi(
        None,
        ps.vi.VIConfig(
            family=family,
            divergence=divergence,
            num_particles=64,
            learning_rate=5e-3 if flow else 3e-2,
            lr_decay=0.998 if flow else 0.995,
            max_iters=max_iters,
            check_convergence=False,
            flow_kwargs=SMALL_FLOW if flow else None,
        ),
        logdensity_fn=logdensity_fn,
        dim=2,
        init_positions=np.random.default_rng(0).normal(size=(200, 2)) * 3.0,
        seed=0,
        progressbar=False,
    )


def gaussian_moments(post):
    p = {k: np.asarray(v) for k, v in post.params.items()}
    if post.family.name == "gaussian_diag":
        return p["loc"], np.diag(np.exp(2 * p["log_scale"]))
    L = np.tril(p["tril_raw"], -1) + np.diag(np.exp(np.diag(p["tril_raw"])))
    return p["loc"], L @ L.T


def cov_scale(cov):
    return np.sqrt(np.outer(np.diag(cov), np.diag(cov)))


def assert_close_moments(mean, cov, target_cov):
    """A Gaussian family's parameters against the target's (no Monte Carlo error)."""
    assert np.all(np.abs(mean - MU) < VI_MEAN_ALLOWANCE * SD), mean
    assert np.all(np.abs(cov - target_cov) < VI_COV_ALLOWANCE * cov_scale(target_cov)), cov


@pytest.mark.parametrize("divergence", ["rkl", "fkl", "iw", "alpha"])
def test_full_rank_gaussian_recovers_target(divergence):
    mean, cov = gaussian_moments(fitted("gaussian", divergence))
    assert_close_moments(mean, cov, SIGMA)


@pytest.mark.parametrize("divergence", ["rkl", "fkl", "iw", "alpha"])
def test_mean_field_gaussian_variances(divergence):
    mean, cov = gaussian_moments(fitted("gaussian_diag", divergence))
    var = np.diag(cov)
    conditional, marginal = 1.0 / np.diag(PREC), np.diag(SIGMA)
    assert np.all(np.abs(mean - MU) < VI_MEAN_ALLOWANCE * SD)
    if divergence == "rkl":
        np.testing.assert_allclose(var, conditional, rtol=VI_COV_ALLOWANCE)
    elif divergence == "fkl":
        np.testing.assert_allclose(var, marginal, rtol=VI_COV_ALLOWANCE)
    else:  # mass covering: wider than reverse KL's (which is 2.8 times narrower than marginal)
        assert np.all(var > 1.1 * conditional) and np.all(var < 1.5 * marginal), var


def _flow_check(family, divergence):
    post = fitted(family, divergence)
    theta = np.asarray(post.sample_theta(jax.random.key(7), N_DRAWS))
    assert_mean_within_mcse(theta, MU, allowance=VI_MEAN_ALLOWANCE * SD)
    # about the draws' own mean: the flow's mean error is checked on the line above
    allowance = VI_COV_ALLOWANCE * cov_scale(SIGMA)
    assert_cov_within_mcse(theta, theta.mean(0), SIGMA, allowance=allowance)


@pytest.mark.parametrize("family", ["maf", "nsf"])
def test_flow_reverse_kl_recovers_target(family):
    _flow_check(family, "rkl")
    assert "pretrain" not in fitted(family, "rkl").history  # off by default under rkl


def test_nsf_mass_covering_recovers_target():
    """NSF under a mass-covering divergence (alpha = 0.5); the others are in the slow test."""
    _flow_check("nsf", "alpha")
    post = fitted("nsf", "alpha")
    assert post.history["pretrain"]["iters"] <= 500 and post.config["pretrain_iters"] == 500


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "divergence"),
    [("maf", "fkl"), ("maf", "iw"), ("maf", "alpha"), ("nsf", "fkl"), ("nsf", "iw")],
)
def test_flow_other_divergences_recover_target(family, divergence):
    _flow_check(family, divergence)


def test_sticking_the_landing_recovers_target():
    post = fit_vi(
        None,
        ps.vi.VIConfig(
            family="gaussian",
            stl=True,
            num_particles=16,
            learning_rate=3e-2,
            lr_decay=0.995,
            max_iters=600,
            check_convergence=False,
        ),
        logdensity_fn=logdensity_fn,
        dim=2,
        seed=1,
        progressbar=False,
    )
    mean, cov = gaussian_moments(post)
    assert_close_moments(mean, cov, SIGMA)
    # at the optimum the STL gradient (and the log-weight spread) vanish
    assert post.evaluate(1000, seed=0).log_weight_sd < 0.05
