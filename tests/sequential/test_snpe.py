"""Sequential NPE: the SNPE-C / SNPE-B losses and the multi-round driver.

Tolerances against the analytic linear-Gaussian posterior are "surrogate
allowance + 4 MCSE", as in ``test_npe.py``; the allowance is wider here (0.3
posterior sd for the mean, 25% for the sd) because each round trains on only
2,000 simulations with a small network for at most 200 epochs.

All default-run tests share one objective object and one batch size, so the
compiled step is reused between them (compilation dominates their run time).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian, two_moons
from pymc_sbi.benchmarks.tasks import linear_gaussian_posterior
from pymc_sbi.direct.sampling import sample_posterior
from pymc_sbi.objectives.npe import npe
from pymc_sbi.objectives.nre import contrast_indices
from pymc_sbi.objectives.snpe import snpe_b, snpe_c
from pymc_sbi.prior import param_spec, prior_log_prob_fn
from pymc_sbi.sequential.snpe import (
    SequentialData,
    append_simulations,
    run_snpe,
    train_round,
)

NET = ps.nn.maf(hidden_features=32, num_transforms=3)
OBJ_C = snpe_c(NET, num_atoms=10)
TRAIN = ps.TrainConfig(batch_size=100, learning_rate=1e-3, max_epochs=200, patience=15)
MEAN_ALLOWANCE = 0.3
SD_ALLOWANCE = 0.25
CORR_ALLOWANCE = 0.15


def _batch(n=64, seed=0, log_proposal=True, shift=0.0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, 2))
    x = theta + 0.5 * rng.normal(size=(n, 2))
    log_prior = -0.5 * np.sum(theta**2, 1) - np.log(2 * np.pi)
    batch = {"theta": theta, "x": x, "log_prior": log_prior}
    if log_proposal:
        batch["log_proposal"] = log_prior + shift
    return {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}


# ------------------------------------------------------------------ objectives
def test_missing_columns_raise_value_error():
    batch = _batch(log_proposal=False)
    tx = optax.adam(1e-3)
    with pytest.raises(ValueError, match="log_proposal"):
        snpe_b(NET).init(jax.random.key(0), batch, tx)
    state = snpe_b(NET).init(jax.random.key(0), _batch(), tx)
    with pytest.raises(ValueError, match="log_proposal"):
        snpe_b(NET).evaluate(jax.random.key(0), state, batch)
    no_prior = {k: v for k, v in batch.items() if k != "log_prior"}
    with pytest.raises(ValueError, match="log_prior"):
        snpe_c(NET).init(jax.random.key(0), no_prior, tx)
    # snpe_c needs no proposal density
    assert snpe_c(NET).init(jax.random.key(0), batch, tx).module.features == 2
    spec = param_spec(linear_gaussian.prior_model())
    with pytest.raises(ValueError, match="log_proposal"):
        append_simulations(
            None, np.zeros((3, 2)), np.zeros((3, 2)), 1, None, log_prior=0.0, spec=spec
        )
    with pytest.raises(ValueError, match="num_atoms"):
        snpe_c(NET, num_atoms=1)


def test_losses_against_hand_computation():
    """Atomic loss = -log softmax of (log q - log p) over the atoms; MLE on prior batches;
    SNPE-B with equal densities = NPE; a constant in log_proposal cancels."""
    key = jax.random.key(3)
    prior_batch = _batch(shift=0.0)
    state = snpe_c(NET).init(jax.random.key(0), prior_batch, optax.adam(1e-3))
    # perturb the identity-initialised flow so that log q depends on x
    params = jax.tree.map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape, p.dtype), state.params
    )
    state = state.replace(params=params)
    npe_loss = float(npe(NET).evaluate(key, state, prior_batch)["loss"])
    # prior-only batch: snpe_c falls back to maximum likelihood
    assert float(OBJ_C.evaluate(key, state, prior_batch)["loss"]) == pytest.approx(npe_loss, 1e-5)
    # proposal batch: atomic loss by hand
    batch = _batch(shift=0.7)
    got = float(OBJ_C.evaluate(key, state, batch)["loss"])
    b = batch["theta"].shape[0]
    idx = jnp.concatenate([jnp.arange(b)[:, None], contrast_indices(key, b, 9)], 1)
    est = ps.Estimator.from_state(
        "npe", state, spec=param_spec(linear_gaussian.prior_model()), x_shape=(2,)
    )
    lq = est.log_prob(batch["x"][:, None, :], batch["theta"][idx])  # (B, A)
    logits = lq - batch["log_prior"][idx]
    want = -float(jnp.mean(jax.nn.log_softmax(logits, -1)[:, 0]))
    assert got == pytest.approx(want, rel=1e-4)
    # snpe_b: uniform weights give the NPE loss; a shared constant cancels
    assert float(snpe_b(NET).evaluate(key, state, batch)["loss"]) == pytest.approx(npe_loss, 1e-5)
    # non-uniform weights: the self-normalised (truncated) weighted NLL
    skew = dict(batch, log_proposal=batch["log_prior"] - 0.3 * batch["theta"][:, 0])
    lp = est.log_prob(batch["x"], batch["theta"])
    w = jax.nn.softmax(0.3 * batch["theta"][:, 0])
    w = jnp.minimum(w, 1 / jnp.sqrt(b))
    w = w / w.sum()
    want_b = -float(jnp.sum(w * lp))
    got_b = float(snpe_b(NET).evaluate(key, state, skew)["loss"])
    assert got_b == pytest.approx(want_b, rel=1e-4)


# ---------------------------------------------------------------------- driver
@pytest.fixture(scope="module")
def lg_run():
    x_obs = linear_gaussian.observation(1)
    res = run_snpe(
        linear_gaussian.prior_model(),
        linear_gaussian.simulator,
        x_obs,
        rounds=2,
        simulations_per_round=2000,
        seed=0,
        method=OBJ_C,
        progressbar=False,
        config=TRAIN,
    )
    return x_obs, res


def check_moments(samples, x_obs):
    mean, cov = linear_gaussian_posterior(np.asarray(x_obs, np.float64)[None])
    sd = np.sqrt(np.diag(cov))
    samples = np.asarray(samples, np.float64)  # i.i.d. draws of the surrogate
    n = samples.shape[0]
    assert_mean_within_mcse(samples, mean, allowance=MEAN_ALLOWANCE * sd)
    assert_sd_within_mcse(samples, sd, allowance=SD_ALLOWANCE * sd)
    corr = cov[0, 1] / (sd[0] * sd[1])
    assert abs(np.corrcoef(samples.T)[0, 1] - corr) < CORR_ALLOWANCE + 4 / np.sqrt(n)


def test_two_rounds_linear_gaussian_match_analytic_posterior(lg_run):
    x_obs, res = lg_run
    est, estimators, sims = res
    assert est is estimators[-1] and len(estimators) == 2 and est.kind == "npe"
    draws = sample_posterior(est, x_obs, 20_000, 1)
    check_moments(draws.samples, x_obs)
    # proposal ids recorded; round-1 parameters concentrated near the posterior
    assert np.array_equal(np.unique(sims.proposal), [0, 1])
    assert np.sum(sims.proposal == 0) == 2000 and np.sum(sims.proposal == 1) == 2000
    prior_sd = sims.theta[sims.proposal == 0].std(0)
    round1 = sims.theta[sims.proposal == 1]
    post_mean, post_cov = linear_gaussian_posterior(np.asarray(x_obs)[None])
    assert np.all(round1.std(0) < 0.7 * prior_sd)
    # round 1's 2,000 parameters are i.i.d. draws of the round-0 surrogate posterior
    allowance = MEAN_ALLOWANCE * np.sqrt(np.diag(post_cov))
    assert_mean_within_mcse(round1, post_mean, allowance=allowance)
    h = estimators[1].history
    assert h["round"] == 1 and h["n_total"] == 4000 and h["start"] == "warm"
    assert h["n_train"] + h["n_val"] == 4000


def test_same_seed_same_result(lg_run):
    """Rerunning round 1's training from the same inputs gives bit-identical parameters."""
    x_obs, (_est, estimators, sims) = lg_run
    data = _record(sims, estimators[0], x_obs)
    a, _ = train_round(OBJ_C, data, seed=5, config=TRAIN.replace(max_epochs=2))
    b, _ = train_round(OBJ_C, data, seed=5, config=TRAIN.replace(max_epochs=2))
    assert all(
        np.array_equal(u, v)
        for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True)
    )


def _record(sims, round0, x_obs) -> SequentialData:
    """Rebuild the driver's record (log densities) from its simulations."""
    log_prior = prior_log_prob_fn(linear_gaussian.prior_model(), sims.spec)(sims.theta)
    log_q = np.asarray(round0.log_prob(x_obs, sims.theta), np.float64)  # Z = 1: unbounded
    log_proposal = np.where(sims.proposal == 0, log_prior, log_q)
    data = None
    for r in (0, 1):
        m = sims.proposal == r
        data = append_simulations(
            data,
            sims.theta[m],
            sims.x[m],
            r,
            log_proposal[m],
            log_prior=log_prior[m],
            spec=sims.spec,
        )
    return data


def test_round_options(lg_run):
    x_obs, (_est, estimators, sims) = lg_run
    data = _record(sims, estimators[0], x_obs)
    _, state0 = train_round(
        OBJ_C,
        SequentialData(data.simulations, data.log_prior, data.log_prior),
        seed=0,
        config=TRAIN.replace(max_epochs=2),
    )
    count = lambda s: int(optax.tree_utils.tree_get(s.opt_state, "count"))
    opts = dict(config=TRAIN.replace(max_epochs=2, patience=100))
    steps_all = 2 * (3600 // 100)
    steps_discard = 2 * (1800 // 100)

    # default: warm start from the parameters, fresh optimizer
    e, s = train_round(OBJ_C, data, seed=1, state=state0, **opts)
    assert e.history["start"] == "warm" and count(s) in (steps_all // 2, steps_all)
    assert int(s.step) > int(state0.step)
    # resume: optimizer state carried over (Adam's count keeps growing)
    e, s = train_round(OBJ_C, data, seed=1, state=state0, resume_training=True, **opts)
    assert e.history["start"] == "resume" and count(s) > count(state0)
    assert count(s) - count(state0) in (steps_all // 2, steps_all)
    # discard prior samples: only round-1 simulations are used
    e, s = train_round(OBJ_C, data, seed=1, state=state0, discard_prior_samples=True, **opts)
    assert e.history["n_train"] + e.history["n_val"] == 2000
    assert count(s) in (steps_discard // 2, steps_discard)
    # from scratch: new z-scoring from the current data, step counter restarts
    e, s = train_round(OBJ_C, data, seed=1, state=state0, retrain_from_scratch=True, **opts)
    assert e.history["start"] == "scratch" and int(s.step) <= steps_all
    assert not np.allclose(s.standardization.theta_mean, state0.standardization.theta_mean)
    with pytest.raises(ValueError, match="exclude"):
        train_round(
            OBJ_C, data, seed=1, state=state0, resume_training=True, retrain_from_scratch=True
        )


def test_two_moons_rounds_focus_on_the_observation():
    """Tiny two-round run on a bounded prior: proposals stay in the support, are recorded
    with a normalised truncated density, and concentrate (covariance det) like the posterior."""
    x_obs = two_moons.observation(1)
    _est, estimators, sims = run_snpe(
        two_moons.prior_model(),
        two_moons.simulator,
        x_obs,
        rounds=2,
        simulations_per_round=1000,
        seed=1,
        method=OBJ_C,
        progressbar=False,
        config=TRAIN.replace(max_epochs=40),
    )
    assert np.array_equal(np.unique(sims.proposal), [0, 1])
    round1 = sims.theta[sims.proposal == 1]
    assert np.all(np.abs(round1) <= 1.0)
    prior_det = np.linalg.det(np.cov(sims.theta[sims.proposal == 0].T))
    assert np.linalg.det(np.cov(round1.T)) < 0.5 * prior_det
    assert 0 < estimators[1].history["acceptance_rate"] <= 1
    assert estimators[0].history["acceptance_rate"] == 1.0


# ------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_three_rounds_beat_one_round_on_two_moons():
    """At a fixed budget of 3,000 simulations, 3 rounds of SNPE-C give a lower C2ST
    against the reference posterior than one round (observation 1, 2,000 vs 2,000)."""
    from pymc_sbi.diagnostics import c2st

    x_obs = two_moons.observation(1)
    ref = two_moons.reference_samples(1)
    ref = ref[np.random.default_rng(0).choice(len(ref), 2000, replace=False)]
    scores = {}
    for rounds in (1, 3):
        est, _, _ = run_snpe(
            two_moons.prior_model(),
            two_moons.simulator,
            x_obs,
            rounds=rounds,
            simulations_per_round=3000 // rounds,
            seed=0,
            network=ps.nn.nsf(),
            progressbar=False,
        )
        scores[rounds] = c2st(ref, sample_posterior(est, x_obs, 2000, 7).samples, seed=1)
    assert scores[3] < scores[1] - 0.02, scores
