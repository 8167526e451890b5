"""run_chains on a plain JAX log-density: reproducibility, compilation cache, IMH, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse import assert_cov_within_mcse, assert_mean_within_mcse

from pymc_sbi.samplers import GaussianProposal, run_chains
from pymc_sbi.samplers.adaptation import (
    covariance,
    rescale_states,
    to_u,
    to_z,
    warmup_schedule,
    welford_init,
    welford_update,
)

MEAN = jnp.array([1.0, -2.0])
COV = jnp.array([[1.0, 1.6], [1.6, 4.0]])
TRACES = {"n": 0}


def logdensity(z):
    TRACES["n"] += 1  # Python side effect: runs once per trace, never when cached
    d = z - MEAN
    return -0.5 * d @ jnp.linalg.solve(COV, d)


INIT = np.random.default_rng(0).normal(size=(16, 2)) * 3


def test_same_seed_same_draws_and_no_recompilation(x64):
    a = run_chains(
        jax.random.key(0), logdensity, INIT, kernel="rmh", num_warmup=100, num_samples=50
    )
    traces = TRACES["n"]
    b = run_chains(
        jax.random.key(0), logdensity, INIT, kernel="rmh", num_warmup=100, num_samples=50
    )
    assert TRACES["n"] == traces  # second call: both programs came from the cache
    np.testing.assert_array_equal(a.positions, b.positions)
    c = run_chains(
        jax.random.key(1), logdensity, INIT, kernel="rmh", num_warmup=100, num_samples=50
    )
    assert not np.allclose(a.positions, c.positions)
    assert a.positions.shape == (16, 50, 2)
    assert set(a.sample_stats) == {"lp", "acceptance_rate", "step_size"}


def test_imh_with_exact_proposal_accepts_always(x64):
    proposal = GaussianProposal(MEAN, jnp.linalg.cholesky(COV))
    res = run_chains(
        jax.random.key(2),
        logdensity,
        INIT,
        kernel="imh",
        num_warmup=0,
        num_samples=200,
        proposal=proposal,
    )
    np.testing.assert_allclose(res.sample_stats["acceptance_rate"], 1.0, atol=1e-9)
    # every proposal accepted: the 16 x 200 draws are i.i.d. draws of the target
    z = np.asarray(res.positions).reshape(-1, 2)
    assert_mean_within_mcse(z, MEAN)
    assert_cov_within_mcse(z, MEAN, COV)


def test_init_positions_are_the_starting_points(x64):
    far = np.full((4, 2), 40.0)  # deep in the tail: one random-walk step (sd 1.7) stays near
    res = run_chains(jax.random.key(0), logdensity, far, kernel="rmh", num_warmup=0, num_samples=1)
    assert np.all(np.linalg.norm(np.asarray(res.positions[:, 0]) - far, axis=1) < 10.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kernel="gibbs"), "Unknown kernel"),
        (dict(kernel="nuts", step_size=0.1), "Unknown option"),
        (dict(kernel="imh"), "proposal"),
        (dict(metric="full"), "metric"),
        (dict(target_accept=1.5), "target_accept"),
    ],
)
def test_bad_options_are_explained(kwargs, match, x64):
    with pytest.raises(ValueError, match=match):
        run_chains(jax.random.key(0), logdensity, INIT, num_warmup=10, num_samples=5, **kwargs)


def test_bad_shapes_and_starting_points(x64):
    with pytest.raises(ValueError, match=r"\(chains, dim\)"):
        run_chains(jax.random.key(0), logdensity, np.zeros(2), kernel="rmh")

    def bounded(z):
        return jnp.where(z[0] > 0, -0.5 * z @ z, -jnp.inf)

    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        run_chains(
            jax.random.key(0),
            bounded,
            np.array([[1.0, 0.0], [-1.0, 0.0]]),
            kernel="rmh",
            num_warmup=5,
            num_samples=2,
        )


def test_warmup_schedule_windows():
    slow, end = warmup_schedule(1000)
    assert not slow[:75].any() and not slow[-50:].any() and slow[75:950].all()
    ends = np.flatnonzero(end)
    np.testing.assert_array_equal(np.diff(np.concatenate([[74], ends])), [25, 50, 100, 200, 500])
    slow, end = warmup_schedule(100)
    assert slow.sum() == 75 and end.sum() >= 1 and not slow[:15].any()
    slow, end = warmup_schedule(100, with_windows=False)
    assert not slow.any() and not end.any()


@pytest.mark.parametrize("dense", [False, True])
def test_pooled_welford_matches_numpy(dense, x64):
    z = np.random.default_rng(3).normal(size=(5, 7, 3)) * [1.0, 2.0, 3.0] + 10.0
    acc = welford_init(3, dense)
    for batch in z:
        acc = welford_update(acc, jnp.asarray(batch))
    flat = z.reshape(-1, 3)
    np.testing.assert_allclose(acc.mean, flat.mean(0), rtol=1e-12)
    cov = np.cov(flat, rowvar=False)
    n = flat.shape[0]
    expected = n / (n + 5) * (cov if dense else np.diag(cov)) + 1e-3 * 5 / (n + 5) * (
        np.eye(3) if dense else 1.0
    )
    np.testing.assert_allclose(covariance(acc), expected, rtol=1e-10)


def test_preconditioner_round_trip(x64):
    chol = jnp.linalg.cholesky(COV)
    z = jnp.asarray(np.random.default_rng(4).normal(size=(6, 2)))
    np.testing.assert_allclose(to_z(chol, to_u(chol, z)), z, atol=1e-12)
    np.testing.assert_allclose(to_z(jnp.array([2.0, 3.0]), z), z * jnp.array([2.0, 3.0]))


@pytest.mark.parametrize("dense", [False, True])
def test_rescaled_states_equal_fresh_states(dense, x64):
    """Moving states to a new preconditioner (what the end of a slow window does)
    gives the state a fresh ``init`` at the same point computes: same z, same
    log-density, gradient in the new u-coordinates."""
    import blackjax

    from pymc_sbi.samplers.driver import _preconditioned

    rng = np.random.default_rng(5)
    if dense:
        old = jnp.linalg.cholesky(COV)
        new = jnp.asarray(np.linalg.cholesky([[2.0, -0.3], [-0.3, 0.5]]))
    else:
        old, new = jnp.array([0.5, 2.0]), jnp.array([3.0, 0.2])
    u = jnp.asarray(rng.normal(size=(6, 2)))
    for make in (blackjax.mala, lambda f, s: blackjax.nuts(f, s, jnp.ones(2))):
        init_old = jax.vmap(make(_preconditioned(logdensity, old), 0.1).init)
        init_new = jax.vmap(make(_preconditioned(logdensity, new), 0.1).init)
        moved = rescale_states(init_old(u), old, new)
        fresh = init_new(to_u(new, to_z(old, u)))
        for a, b in zip(moved, fresh, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    rmh = blackjax.additive_step_random_walk.normal_random_walk(
        _preconditioned(logdensity, old), jnp.ones(2)
    )
    moved = rescale_states(jax.vmap(rmh.init)(u), old, new)
    np.testing.assert_allclose(to_z(new, moved.position), to_z(old, u), atol=1e-12)
