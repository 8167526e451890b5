"""SBC: ranks, uniformity tests with known answers, vectorised inference for NPE and NLE.

Known answers come from the conjugate linear-Gaussian task: exact posterior
draws must give uniform ranks, a posterior with half the true spread (or a
shifted one) must be rejected, and the product-posterior MCMC must reproduce
the analytic posterior moments.
"""

import numpy as np
import pytest
from exact_lg import analytic_sbc_draws
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian
from pymc_sbi.benchmarks.tasks import linear_gaussian_posterior
from pymc_sbi.diagnostics import (
    posterior_draws,
    run_sbc,
    sbc_from_samples,
    sbc_ranks,
    sbc_to_datatree,
    uniformity,
)

N, L = 200, 100


def test_ranks_count_draws_below_truth():
    theta = np.array([[0.0, 10.0], [2.5, -1.0]])
    draws = np.array(
        [
            [[-1.0, 11.0], [1.0, 9.0], [-0.5, 12.0]],  # below: 2 of theta[0], 1 of theta[1]
            [[3.0, -2.0], [2.0, -3.0], [1.0, 0.0]],  # below: 2, 2
        ]
    )
    np.testing.assert_array_equal(sbc_ranks(theta, draws), [[2, 1], [2, 2]])
    with pytest.raises(ValueError, match=r"\(N, L, d\)"):
        sbc_ranks(theta, draws[0])
    with pytest.raises(ValueError, match="columns"):
        sbc_ranks(theta, draws[..., :1])


def test_exact_posterior_ranks_are_uniform():
    theta, _, draws, _, _ = analytic_sbc_draws(N, L, seed=0)
    result = sbc_from_samples(theta, draws)
    assert result.ranks.min() >= 0 and result.ranks.max() <= L
    assert np.all((result.pit > 0) & (result.pit < 1))
    p = uniformity(result)
    # Under H0 every p-value is U(0, 1): P(all four > 0.001) = 0.996, fixed seed.
    assert np.all(p["pot_c"] > 1e-3) and np.all(p["chi2"] > 1e-3), p
    # The PIT of exact draws is uniform: mean 1/2, sd sqrt(1/12) (less 1/(12 (L+1)^2), the
    # rank's discreteness: 3e-6 of the variance)
    assert_mean_within_mcse(result.pit, 0.5)
    assert_sd_within_mcse(result.pit, np.sqrt(1 / 12))


@pytest.mark.parametrize(("scale", "shift"), [(0.5, 0.0), (1.0, 0.75)])
def test_overconfident_or_biased_posterior_is_caught(scale, shift):
    theta, _, draws, _, _ = analytic_sbc_draws(N, L, seed=1, scale=scale, shift=shift)
    p = uniformity(sbc_from_samples(theta, draws))
    assert np.all(p["pot_c"] < 1e-4) and np.all(p["chi2"] < 1e-4), p
    ranks = sbc_from_samples(theta, draws).ranks
    if shift == 0.0:  # over-confident: ranks pile up at both ends
        ends = np.mean((ranks < 0.1 * L) | (ranks > 0.9 * L))
        assert ends > 0.2 + 4 * np.sqrt(0.2 * 0.8 / (2 * N))  # 20% expected if uniform


def test_sbc_to_datatree_layout():
    theta, _, draws, _, _ = analytic_sbc_draws(20, 10, seed=2)
    spec = ps.param_spec(linear_gaussian.prior_model())
    dt = sbc_to_datatree(sbc_from_samples(theta, draws, spec=spec))
    pit = dt["prior_sbc"]["theta"]
    assert pit.dims == ("chain", "draw", "theta_dim_0") and pit.shape == (1, 20, 2)
    np.testing.assert_allclose(pit.values[0], (sbc_ranks(theta, draws) + 0.5) / 11)


def test_sbc_from_samples_checks_log_densities():
    theta, _, draws, lt, ls = analytic_sbc_draws(10, 5, seed=3)
    with pytest.raises(ValueError, match="both"):
        sbc_from_samples(theta, draws, log_density_true=lt)
    with pytest.raises(ValueError, match=r"\(N, L\)"):
        sbc_from_samples(theta, draws, log_density_true=lt, log_density_samples=ls[:, :2])


def test_npe_sbc_one_batched_pass(lg_npe_small):
    prior = linear_gaussian.prior_model()
    res = run_sbc(lg_npe_small, prior, linear_gaussian.simulator, num_datasets=150,
                  num_posterior_samples=100, seed=0)  # fmt: skip
    assert res.ranks.shape == (150, 2) and res.posterior_samples.shape == (150, 100, 2)
    assert res.info["method"] == "npe" and res.info["inference_s"] > 0
    # theta* are prior draws: N(0, I)
    assert_mean_within_mcse(res.theta_true, 0.0)
    assert_sd_within_mcse(res.theta_true, 1.0)
    assert res.log_density_true.shape == (150,) and res.log_density_samples.shape == (150, 100)
    p = uniformity(res)
    assert np.all(p["pot_c"] > 1e-3), p  # a decent NPE is not rejected at N = 150
    # Same seed, same result.
    again = run_sbc(lg_npe_small, prior, linear_gaussian.simulator, num_datasets=150,
                    num_posterior_samples=100, seed=0)  # fmt: skip
    np.testing.assert_array_equal(again.ranks, res.ranks)


def assert_standardised_draws_are_standard_normal(res):
    """Pooled over datasets: each dataset's draws, standardised by its analytic posterior, are
    N(0, 1) draws. The (N, chains * draws, 2) samples of the product-posterior run are
    N * 4 chains of draws (run_sbc's default chains=4), so the ESS pools to thousands: 4 MCSE
    is ~0.02-0.03 posterior sd, where the per-dataset checks allow 0.2-0.3."""
    std = []
    for i in range(res.x.shape[0]):
        mean, cov = linear_gaussian_posterior(res.x[i])
        std.append((res.posterior_samples[i] - mean) / np.sqrt(np.diag(cov)))
    std = np.stack(std)  # (N, 4 * draws, 2)
    chains = std.reshape(-1, 4, std.shape[1] // 4, 2).reshape(-1, std.shape[1] // 4, 2)
    assert_mean_within_mcse(chains, 0.0, chains=True)
    assert_sd_within_mcse(chains, 1.0, chains=True)


def test_nle_sbc_exact_likelihood_matches_analytic_posterior(exact_nle):
    """Product-posterior NUTS over 60 datasets (2 trials each) with the exact likelihood.

    Each dataset's draws reproduce its analytic posterior, and the ranks are uniform.
    """
    n, trials = 60, 2
    res = run_sbc(exact_nle, linear_gaussian.prior_model(), linear_gaussian.simulator,
                  num_datasets=n, num_posterior_samples=200, num_trials=trials,
                  num_warmup=200, seed=1)  # fmt: skip
    assert res.x.shape == (n, trials, 2) and res.posterior_samples.shape == (n, 200, 2)
    assert res.info["method"] == "nle" and res.info["mean_diverging"] == 0.0
    z = []
    for i in range(n):
        mean, cov = linear_gaussian_posterior(res.x[i])
        sd = np.sqrt(np.diag(cov))
        z.append((res.posterior_samples[i].mean(0) - mean) / sd)  # in posterior sd units
        # sd within 30% (200 autocorrelated draws: sd of the sd estimate ~ 7%; 4 MCSE from
        # 4 chains x 50 draws would be 16-42 % here, with ESS this noisy)
        assert np.all(np.abs(res.posterior_samples[i].std(0) / sd - 1) < 0.3)
    # Each standardised mean error has sd 1 / sqrt(ESS); with ESS >= 50 of 200 draws the
    # RMS over 120 coordinates is <= 0.14 (+ its own ~7% noise): bound 0.2.
    z = np.array(z)
    assert np.sqrt(np.mean(z**2)) < 0.2, np.sqrt(np.mean(z**2))
    assert_standardised_draws_are_standard_normal(res)
    p = uniformity(res)
    assert np.all(p["pot_c"] > 1e-3) and np.all(p["chi2"] > 1e-3), p
    # posterior_draws is the same machinery for any batch of observations.
    samples, lp, _ = posterior_draws(exact_nle, linear_gaussian.prior_model(), res.x[:3], 8,
                                     seed=0, chains=4, num_warmup=50)  # fmt: skip
    assert samples.shape == (3, 8, 2) and lp.shape == (3, 8) and np.all(np.isfinite(lp))


def test_nre_sbc_uses_the_log_ratio(exact_nle):
    """An "NRE" whose log r(x, theta) is the exact log-likelihood plus a term in x alone
    (what a ratio to the evidence adds) gives the analytic posterior: run_sbc must sum
    log_ratio over trials (log_prob raises if called) and the ranks are uniform."""
    from types import SimpleNamespace

    import jax.numpy as jnp

    def log_ratio(x, theta):
        x = jnp.asarray(x)
        return exact_nle.log_prob(x, theta) + 3.0 * jnp.sum(x**2, axis=-1)

    def no_log_prob(*args):
        raise AssertionError("an NRE has no log_prob")

    nre = SimpleNamespace(kind="nre", spec=exact_nle.spec, log_ratio=log_ratio,
                          log_prob=no_log_prob, x_shape=(2,))  # fmt: skip
    n = 40
    res = run_sbc(nre, linear_gaussian.prior_model(), linear_gaussian.simulator,
                  num_datasets=n, num_posterior_samples=200, num_trials=2, num_warmup=200,
                  seed=5)  # fmt: skip
    assert res.info["method"] == "nre"
    z = []
    for i in range(n):
        mean, cov = linear_gaussian_posterior(res.x[i])
        z.append((res.posterior_samples[i].mean(0) - mean) / np.sqrt(np.diag(cov)))
    # as in the NLE test: RMS standardised mean error <= 0.14 + noise over 80 coordinates
    assert np.sqrt(np.mean(np.square(z))) < 0.2
    assert_standardised_draws_are_standard_normal(res)
    p = uniformity(res)
    assert np.all(p["pot_c"] > 1e-3), p


def test_nle_sbc_trained_estimator_runs(lg_nle):
    """The real NLE estimator (network log_prob inside the product posterior)."""
    res = run_sbc(lg_nle, linear_gaussian.prior_model(), linear_gaussian.simulator,
                  num_datasets=10, num_posterior_samples=20, num_warmup=100, seed=2)  # fmt: skip
    assert res.ranks.shape == (10, 2) and np.all(np.isfinite(res.log_density_samples))
    assert res.info["warmup_acceptance"] > 0.5
    # the log densities are the product posterior's, prior N(0, I) times the network's
    # likelihood, at each dataset's own draws and data (unconstrained = theta here)
    theta = res.posterior_samples  # (10, 20, 2)
    x = res.x.reshape(10, 1, 2)
    log_prior = -0.5 * np.sum(theta**2, -1) - np.log(2 * np.pi)
    expected = log_prior + np.asarray(lg_nle.log_prob(x, theta), np.float64)
    np.testing.assert_allclose(res.log_density_samples, expected, rtol=1e-5, atol=1e-5)
    # ranks count draws below theta*: recomputed from the draws
    np.testing.assert_array_equal(res.ranks, np.sum(theta < res.theta_true[:, None], axis=1))


def test_run_sbc_bad_inputs(lg_npe_small):
    import pymc as pm

    with pm.Model() as other:
        pm.Normal("mu", 0, 1)
    with pytest.raises(ValueError, match=r"'theta' is missing .*'mu', which the estimator"):
        run_sbc(lg_npe_small, other, linear_gaussian.simulator, num_datasets=10)
    with pm.Model() as wrong_shape:  # the lg task's theta has shape (2,)
        pm.Normal("theta", 0, 1, shape=3)
    with pytest.raises(ValueError, match=r"'theta' has shape \(3,\) in .* but \(2,\) in training"):
        run_sbc(lg_npe_small, wrong_shape, linear_gaussian.simulator, num_datasets=10)
    with pytest.raises(ValueError, match="num_trials"):
        run_sbc(lg_npe_small, linear_gaussian.prior_model(), linear_gaussian.simulator,
                num_datasets=10, num_trials=3)  # fmt: skip
    with pytest.raises(ValueError, match="num_datasets"):
        run_sbc(lg_npe_small, linear_gaussian.prior_model(), linear_gaussian.simulator,
                num_datasets=1)  # fmt: skip


@pytest.mark.slow
def test_trained_nle_sbc_200_datasets_is_calibrated(lg_nle):
    """The benchmark setting: 200 datasets, product-posterior NUTS on a trained NLE."""
    res = run_sbc(lg_nle, linear_gaussian.prior_model(), linear_gaussian.simulator,
                  num_datasets=200, num_posterior_samples=200, num_warmup=300, seed=3)  # fmt: skip
    p = uniformity(res)
    assert np.all(p["pot_c"] > 1e-3) and np.all(p["chi2"] > 1e-3), p


def test_sbc_from_datatree_of_a_batch():
    """``ps.direct.to_datatree`` output for N observations gives the same ranks as the array."""
    theta, x, draws, _, _ = analytic_sbc_draws(15, 30, seed=5)
    spec = ps.param_spec(linear_gaussian.prior_model())
    dt = ps.direct.to_datatree(draws, spec, observations=x)
    from_tree = sbc_from_samples(theta, dt, spec=spec)
    np.testing.assert_array_equal(from_tree.ranks, sbc_ranks(theta, draws))
    with pytest.raises(ValueError, match="observation"):
        sbc_from_samples(theta, ps.direct.to_datatree(draws[0], spec), spec=spec)
