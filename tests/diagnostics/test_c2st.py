"""Tests for the classifier two-sample test."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sklearn")

from pymc_sbi.diagnostics import c2st


def test_same_distribution_is_chance_level():
    n = 1000
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    a = rng.multivariate_normal([1.0, -2.0], cov, size=n)
    b = rng.multivariate_normal([1.0, -2.0], cov, size=n)
    # Under H0 each of the 2n held-out predictions is a coin flip, so the
    # accuracy has binomial standard error se = sqrt(0.25 / (2n)) ≈ 0.0112.
    # Allow 4 se (false-alarm rate ~6e-5) plus 0.02 for the classifier fitting
    # noise of a finite training set (cross-validated accuracy under H0 is
    # known to sit slightly below 0.5) -> |c2st - 0.5| < 0.065.
    se = np.sqrt(0.25 / (2 * n))
    assert abs(c2st(a, b) - 0.5) < 4 * se + 0.02


def test_separated_distributions_are_fully_separable():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 2))
    b = rng.normal(size=(500, 2)) + np.array([10.0, 0.0])  # means 10 sd apart
    assert c2st(a, b) > 0.99


def test_deterministic_for_fixed_seed_and_accepts_jax_and_1d():
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    b = rng.normal(size=200) + 0.5
    first = c2st(a, b, seed=3)
    assert isinstance(first, float)
    assert 0.0 <= first <= 1.0
    # Same seed, same value; JAX input and (n,) == (n, 1) give the same number.
    assert c2st(jnp.asarray(a)[:, None], jnp.asarray(b)[:, None], seed=3) == first


def test_max_samples_subsamples_deterministically():
    # Clearly different sets: the MLP converges in few epochs (overlapping
    # small sets make it memorise noise for thousands of epochs).
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 2))
    b = rng.normal(size=(300, 2)) + 3.0
    v1 = c2st(a, b, max_samples=100, seed=5)
    assert v1 == c2st(a, b, max_samples=100, seed=5)
    assert v1 > 0.8
    # max_samples at least as large as both sets is a no-op.
    assert c2st(a[:100], b[:100], max_samples=100) == c2st(a[:100], b[:100])


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        (np.zeros((50, 2)), np.zeros((50, 3)), "same dimension"),
        (np.zeros((50, 2, 1)), np.zeros((50, 2)), "shape"),
        (np.zeros((9, 2)), np.zeros((50, 2)), "at least"),
        (np.full((50, 2), np.nan), np.zeros((50, 2)), "non-finite"),
    ],
)
def test_bad_inputs_raise(p, q, match):
    with pytest.raises(ValueError, match=match):
        c2st(p, q)


def test_too_few_after_subsampling_raises():
    with pytest.raises(ValueError, match="at least"):
        c2st(np.zeros((50, 1)), np.ones((50, 1)), max_samples=5)
