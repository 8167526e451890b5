"""MNLE with a shared trunk: one network pass per context; sampling, deduplication, saving.

Normalisation and accuracy against the exact race likelihood are checked for both
architectures in tests/test_mnle.py."""

import jax
import numpy as np
import pytest
from mcse import assert_mean_within_mcse, assert_prob_within_mcse, assert_sd_within_mcse
from race_helpers import (
    POINT,
    assert_same,
    grouped_model,
    race_mnle,
    race_mnle_shared,
    race_simulations,
)
from test_mnle import THETAS, S

import pymc_sbi as ps
from pymc_sbi.terms.dedup import supports_deduplication

LOG_RT = np.linspace(-9.0, 6.0, 6001)


def _density_on_grid(est, theta, s, k):
    """q(rt, k | theta, s) on exp(LOG_RT), float64."""
    rt = np.exp(LOG_RT)
    x = np.stack([rt, np.full_like(rt, k)], -1)
    return np.exp(np.asarray(est.log_prob(x, theta, np.array([s])), np.float64))


def test_samples_follow_the_density():
    """Choice frequency within 4 MCSE of pi_1, and the mean and sd of log rt given each
    choice within 4 MCSE of their values under the density (quadrature on the grid)."""
    est = race_mnle_shared()
    theta, s, n = THETAS[0], S[0], 6000
    x = np.asarray(est.sample(jax.random.key(0), theta, num_samples=n, covariates=np.array([s])))
    assert x.shape == (n, 2) and set(np.unique(x[:, 1])) <= {0.0, 1.0} and np.all(x[:, 0] > 0)
    rt = np.exp(LOG_RT)
    mass = {k: _density_on_grid(est, theta, s, k) * rt for k in (0, 1)}  # density of log rt
    p1 = np.trapezoid(mass[1], LOG_RT)
    assert_prob_within_mcse(x[:, 1].sum(), n, p1)
    for k in (0, 1):
        pk = np.trapezoid(mass[k], LOG_RT)
        mean = np.trapezoid(mass[k] * LOG_RT, LOG_RT) / pk
        sd = np.sqrt(np.trapezoid(mass[k] * (LOG_RT - mean) ** 2, LOG_RT) / pk)
        drawn = np.log(x[x[:, 1] == k, 0])
        assert_mean_within_mcse(drawn, mean)
        assert_sd_within_mcse(drawn, sd)


def test_one_network_pass_per_context():
    """Arithmetic of ``context_terms`` (everything dedup needs from one context), from XLA's
    cost analysis. Separate networks: categorical MLP 4-32-32-2 plus the MDN's 6-32-32-9 MLP
    once per category, 4,224 multiply-adds per context; shared trunk: 4-32-32 plus one
    32 x 20 head, 1,792 (2 flops each, plus activations). A per-category pass of the trunk
    would double the shared count."""

    def flops(est):
        fn = lambda c: est.module.apply(est.params, c, method="context_terms")
        cost = jax.jit(fn).lower(np.zeros((1000, 4), np.float32)).compile().cost_analysis()
        return cost["flops"] / 1000

    shared, separate = flops(race_mnle_shared()), flops(race_mnle())
    assert shared < 0.5 * separate, (shared, separate)
    assert 2 * 1792 <= shared < 1.5 * 2 * 1792


def test_deduplicated_term_matches_per_trial_evaluation():
    est = race_mnle_shared()
    assert supports_deduplication(est)
    assert_same(grouped_model(est, True), grouped_model(est, False), POINT)


def test_save_load_roundtrip(tmp_path):
    est = race_mnle_shared()
    path = tmp_path / "shared.safetensors"
    est.save(path)
    loaded = ps.load(path)
    assert loaded.module.shared_trunk and loaded.module.flow.num_components == 3
    x = race_simulations().x[:50]
    np.testing.assert_array_equal(
        np.asarray(loaded.log_prob(x, THETAS[1], np.array([0.3]))),
        np.asarray(est.log_prob(x, THETAS[1], np.array([0.3]))),
    )


def test_shared_trunk_needs_an_mdn_flow():
    net = ps.nn.mixed_density(ps.nn.nsf(), shared_trunk=True)
    with pytest.raises(ValueError, match="needs an MDN flow"):
        net.bind_shapes(2, 2)
