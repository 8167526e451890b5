"""The shared MCSE assertions (tests/mcse.py) on draws of known distributions.

Each helper must pass on exact draws and fail when the expected value is off by
10 of its own MCSE (at z = 4 that leaves a margin of 6 MCSE, so the failure is
not a matter of the seed).
"""

import numpy as np
import pytest
from mcse import (
    assert_cov_within_mcse,
    assert_mean_within_mcse,
    assert_prob_within_mcse,
    assert_sd_within_mcse,
    effective_sample_size,
)

MEAN = np.array([1.0, -2.0, 0.5])
SD = np.array([1.0, 3.0, 0.1])
N = 10_000


@pytest.fixture(scope="module")
def iid():
    return MEAN + SD * np.random.default_rng(0).standard_normal((N, 3))


def ar1_chains(phi, chains=8, draws=2000, seed=1):
    """Stationary AR(1) chains with N(0, 1) marginals: ESS = n (1 - phi) / (1 + phi)."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((chains, draws)) * np.sqrt(1 - phi**2)
    out = np.empty((chains, draws))
    out[:, 0] = rng.standard_normal(chains)
    for t in range(1, draws):
        out[:, t] = phi * out[:, t - 1] + eps[:, t]
    return out


def test_effective_sample_size():
    x = np.zeros((7, 2, 3))
    np.testing.assert_array_equal(effective_sample_size(x), np.full((2, 3), 7.0))
    ess = effective_sample_size(ar1_chains(0.8), chains=True)
    # AR(1) with phi = 0.8: 16,000 (0.2 / 1.8) = 1,778; the estimate is good to ~10 %
    assert ess.shape == () and 0.8 * 1778 < ess < 1.2 * 1778, ess
    with pytest.raises(ValueError, match="chains, draws"):
        effective_sample_size(np.zeros(5), chains=True)


def test_mean_passes_on_exact_draws_and_fails_10_mcse_off(iid):
    check = assert_mean_within_mcse(iid, MEAN)
    np.testing.assert_allclose(check.mcse, SD / np.sqrt(N), rtol=0.03)
    assert np.all(check.z_score < 4)
    for j in range(3):
        off = MEAN.copy()
        off[j] += 10 * SD[j] / np.sqrt(N)
        with pytest.raises(AssertionError, match="the mean") as err:
            assert_mean_within_mcse(iid, off)
        # the message has one row per coordinate; only coordinate j fails
        rows = str(err.value).splitlines()[2:]
        assert len(rows) == 3 and [r.endswith("False") for r in rows] == [i == j for i in range(3)]
    # an allowance of 7 MCSE on top of z = 4 covers an error of 10 MCSE
    assert_mean_within_mcse(iid, MEAN + 10 * SD / np.sqrt(N), allowance=7 * SD / np.sqrt(N))
    with pytest.raises(ValueError, match="allowance"):
        assert_mean_within_mcse(iid, MEAN, allowance=-1.0)


def test_sd_passes_on_exact_draws_and_fails_10_mcse_off(iid):
    check = assert_sd_within_mcse(iid, SD)
    # Gaussian: MCSE(sd) = sd / sqrt(2 n)
    np.testing.assert_allclose(check.mcse, SD / np.sqrt(2 * N), rtol=0.05)
    for sign in (-1, 1):
        with pytest.raises(AssertionError, match="standard deviation"):
            assert_sd_within_mcse(iid, SD + sign * 10 * SD / np.sqrt(2 * N))


def test_sd_mcse_uses_the_kurtosis():
    """Uniform(0, 1): kurtosis 9/5, so MCSE(sd) = sd sqrt(0.8 / (4 n)), 0.63 times the
    Gaussian formula; Laplace: kurtosis 6, 1.58 times."""
    rng = np.random.default_rng(2)
    u = rng.uniform(size=N)
    check = assert_sd_within_mcse(u, np.sqrt(1 / 12))
    np.testing.assert_allclose(check.mcse, np.sqrt(1 / 12) * np.sqrt(0.8 / (4 * N)), rtol=0.05)
    with pytest.raises(AssertionError):
        assert_sd_within_mcse(u, np.sqrt(1 / 12) + 10 * float(check.mcse))
    lap = rng.laplace(size=N)
    check = assert_sd_within_mcse(lap, np.sqrt(2.0))
    np.testing.assert_allclose(check.mcse, np.sqrt(2.0) * np.sqrt(5 / (4 * N)), rtol=0.1)


def test_chains_use_the_effective_sample_size():
    """AR(1) chains, phi = 0.8: the MCSE is sqrt(9) = 3 times the i.i.d. one."""
    x = ar1_chains(0.8)
    check = assert_mean_within_mcse(x, 0.0, chains=True)
    np.testing.assert_allclose(check.mcse, 1 / np.sqrt(1778), rtol=0.1)
    with pytest.raises(AssertionError):
        assert_mean_within_mcse(x, 10 * float(check.mcse), chains=True)
    # the i.i.d. formula would be 3 times too tight: it must not be used for chains
    iid_mcse = x.std(ddof=1) / np.sqrt(x.size)
    assert check.mcse > 2.5 * iid_mcse
    sd_check = assert_sd_within_mcse(x, 1.0, chains=True)
    assert sd_check.mcse > 1.5 * 1 / np.sqrt(2 * x.size)
    with pytest.raises(AssertionError):
        assert_sd_within_mcse(x, 1.0 + 10 * float(sd_check.mcse), chains=True)
    # coordinates after (chains, draws) are tested one by one
    two = np.stack([x, 2 * x], axis=-1)
    np.testing.assert_allclose(
        assert_mean_within_mcse(two, [0.0, 0.0], chains=True).mcse,
        [check.mcse, 2 * check.mcse],
        rtol=1e-10,
    )


def test_prob_passes_on_binomial_counts_and_fails_10_mcse_off():
    p = np.array([0.05, 0.5, 0.9])
    k = np.random.default_rng(3).binomial(N, p)
    check = assert_prob_within_mcse(k, N, p)
    np.testing.assert_allclose(check.mcse, np.sqrt(p * (1 - p) / N))
    with pytest.raises(AssertionError, match="the frequency"):
        assert_prob_within_mcse(k, N, p + 10 * np.sqrt(p * (1 - p) / N))
    with pytest.raises(AssertionError, match="the frequency"):
        assert_prob_within_mcse(k, N, p - 10 * np.sqrt(p * (1 - p) / N))


def test_cov_passes_on_exact_draws_and_fails_10_mcse_off():
    cov = np.array([[1.0, 0.8], [0.8, 2.0]])
    draws = np.random.default_rng(4).multivariate_normal([1.0, -2.0], cov, N)
    check = assert_cov_within_mcse(draws, [1.0, -2.0], cov)
    # Gaussian: sd of a product about the mean is sqrt(S_ij^2 + S_ii S_jj)
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / N)
    np.testing.assert_allclose(check.mcse, se, rtol=0.05)
    np.testing.assert_allclose(check.estimate, np.cov(draws.T), atol=0.1 * se.min())
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        off = cov.copy()
        off[i, j] += 10 * se[i, j]
        with pytest.raises(AssertionError, match="the covariance"):
            assert_cov_within_mcse(draws, [1.0, -2.0], off)
