"""Tests for the classifier two-sample test."""

import jax.numpy as jnp
import numpy as np
import pytest
from mcse import assert_prob_within_mcse

pytest.importorskip("sklearn")

from pymc_sbi.diagnostics import c2st

C2ST_FIT_ALLOWANCE = 0.02  # accuracy under H0, beyond the binomial error (see below)


def test_same_distribution_is_chance_level():
    n = 1000
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    a = rng.multivariate_normal([1.0, -2.0], cov, size=n)
    b = rng.multivariate_normal([1.0, -2.0], cov, size=n)
    # Under H0 each of the 2n held-out predictions is a coin flip, so the
    # accuracy is a binomial frequency with standard error sqrt(0.25 / (2n)) ≈ 0.0112.
    # Allow 4 se (false-alarm rate ~6e-5) plus C2ST_FIT_ALLOWANCE for the classifier fitting
    # noise of a finite training set (cross-validated accuracy under H0 is
    # known to sit slightly below 0.5) -> |c2st - 0.5| < 0.065.
    assert_prob_within_mcse(c2st(a, b) * 2 * n, 2 * n, 0.5, allowance=C2ST_FIT_ALLOWANCE)


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
@pytest.mark.filterwarnings("ignore:c2st got sets")
def test_bad_inputs_raise(p, q, match):
    with pytest.raises(ValueError, match=match):
        c2st(p, q)


def test_too_few_after_subsampling_raises():
    with pytest.raises(ValueError, match="at least"):
        c2st(np.zeros((50, 1)), np.ones((50, 1)), max_samples=5)


# ------------------------------------------------------------- sbibm, fast, DataTree
def test_matches_sbibm_reference_value():
    """sbibm's c2st on fixed data (2 x 1000 draws, mean shift 0.5 sd) gave 0.5750.

    The expected value was computed once by ``sbibm_c2st_reference.py`` in this
    folder: sbibm's ``c2st`` step by step with numpy float32 in place of torch
    (see its docstring). Bayes-optimal accuracy here is Phi(0.25) = 0.599.
    """
    from sbibm_c2st_reference import reference_data  # this test folder is on sys.path

    x, y = reference_data()
    assert abs(c2st(x, y) - 0.5750) < 0.01


def test_fast_classifier_chance_and_separable():
    rng = np.random.default_rng(4)
    n = 4000
    a = rng.normal(size=(n, 3))
    b = rng.normal(size=(n, 3))
    se = np.sqrt(0.25 / (2 * n))
    assert abs(c2st(a, b, classifier="fast") - 0.5) < 4 * se + 0.02
    assert c2st(a, b + np.array([0.0, 8.0, 0.0]), classifier="fast") > 0.99
    # A smaller shift is detected too (Bayes accuracy Phi(0.5) = 0.69).
    assert c2st(a, b + np.array([1.0, 0.0, 0.0]), classifier="fast") > 0.65


def test_custom_classifier_and_bad_name():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 2))
    b = rng.normal(size=(300, 2)) + 4.0
    assert c2st(a, b, classifier=LogisticRegression()) > 0.95
    with pytest.raises(ValueError, match="classifier must be one of"):
        c2st(a, b, classifier="forest")


def _posterior_tree(theta, sigma, extra=None):
    import arviz as az

    post = {"theta": theta, "sigma": sigma}
    if extra is not None:
        post["extra"] = extra
    return az.from_dict({"posterior": post})


def test_datatree_input_picks_variables_by_name():
    from pymc_sbi.diagnostics.c2st import samples_matrix

    rng = np.random.default_rng(6)
    # (chain=2, draw=150, 2) theta and scalar sigma -> (300, 3) matrices.
    t1, s1 = rng.normal(size=(2, 150, 2)), rng.normal(size=(2, 150))
    t2, s2 = rng.normal(size=(2, 150, 2)) + 5.0, rng.normal(size=(2, 150)) + 5.0
    dt1 = _posterior_tree(t1, s1)
    dt2 = _posterior_tree(t2, s2, extra=rng.normal(size=(2, 150)))  # extra var ignored
    m1 = samples_matrix(dt1)
    np.testing.assert_array_equal(m1[:, :2], t1.reshape(300, 2))
    np.testing.assert_array_equal(m1[:, 2], s1.reshape(300))
    expected = c2st(m1, np.column_stack([t2.reshape(300, 2), s2.reshape(300)]), seed=2)
    assert c2st(dt1, dt2, seed=2) == expected > 0.95
    # One variable by name, and the same from the Dataset of the group.
    only_sigma = c2st(dt1, dt2["posterior"].to_dataset(), var_names="sigma", seed=2)
    assert only_sigma == c2st(s1.reshape(-1), s2.reshape(-1), seed=2)
    with pytest.raises(ValueError, match="no variable"):
        c2st(dt1, dt2, var_names=["mu"])
    with pytest.raises(ValueError, match="no group"):
        c2st(dt1, dt2, group="prior")


@pytest.mark.slow
@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_matches_sbibm_algorithm_on_other_data(shift):
    """Run the numpy transcription of sbibm's c2st beside ours on fresh data."""
    from sbibm_c2st_reference import sbibm_c2st_numpy

    rng = np.random.default_rng(11)
    x = rng.standard_normal((800, 3)).astype(np.float32)
    y = (rng.standard_normal((800, 3)) + np.array([shift, 0.0, 0.0])).astype(np.float32)
    assert abs(c2st(x, y) - sbibm_c2st_numpy(x, y)) < 0.01
