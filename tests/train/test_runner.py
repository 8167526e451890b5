"""The runner layer: run == a manual loop over update, every objective, ensembles of runs."""

import jax
import numpy as np
import pytest

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian

TINY = dict(hidden_features=8, num_transforms=1)


@pytest.fixture(scope="module")
def sims():
    return ps.simulate(
        linear_gaussian.prior_model(), linear_gaussian.simulator, 300, seed=0, progressbar=False
    )


def _assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def runner():
    """One runner shared by the tests, so its compiled 10-step run is reused."""
    return ps.train.Runner(
        ps.nle(ps.nn.maf(**TINY)), ps.TrainConfig(learning_rate=3e-3).make_optimizer(300), 64
    )


def test_run_equals_manual_loop_over_update(sims, runner):
    """One compiled scan == a Python loop over update with the documented key schedule.

    10 steps with 4 mini-batches per epoch: 2 full epochs and a partial one.
    """
    data = sims.as_batch()
    key = jax.random.key(3)
    result = runner.run(key, data, num_steps=10)
    assert result.losses.shape == (10,) and int(result.state.step) == 10

    k_init, k_loop = jax.random.split(key)
    state = runner.init(k_init, data)
    n, per_epoch = 300, ps.train.steps_per_epoch(300, 64)
    assert per_epoch == 4
    epoch_keys = jax.random.split(k_loop, 3)
    losses = []
    for t in range(10):
        e, i = divmod(t, per_epoch)
        if i == 0:
            idx, keys = ps.train.epoch_batches(epoch_keys[e], n, 64)
        state, metrics = runner.update(keys[i], state, ps.train.take(data, idx[i]))
        losses.append(float(metrics["loss"]))
    _assert_trees_close(result.state.params, state.params)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-6)


def test_run_trains_and_continues_from_a_state(sims, runner):
    """Continuing from a state reuses the compiled run; the loss goes down."""
    data = sims.as_batch()
    result = runner.run(jax.random.key(0), data, num_steps=10)
    losses = [np.asarray(result.losses)]
    for i in range(11):
        result = runner.run(jax.random.key(i + 1), data, num_steps=10, init_state=result.state)
        losses.append(np.asarray(result.losses))
    losses = np.concatenate(losses)
    assert int(result.state.step) == 120 and losses.shape == (120,)
    # an untrained flow starts near the entropy of the z-scored data (~2.9 nats); the
    # exact likelihood gives 2.62 (see test_training)
    assert losses[-20:].mean() < losses[:10].mean() - 0.15
    est = runner.estimator(result.state, sims.spec, sims.x_shape)
    assert est.kind == "nle" and est.members is None
    lp = est.log_prob(sims.x[:100], sims.theta[:100])
    assert np.all(np.isfinite(lp)) and -float(np.mean(lp)) < losses[:10].mean()
    with pytest.raises(ValueError, match="exactly one"):
        runner.run(jax.random.key(0), data)
    assert (
        ps.train.steps_per_epoch(300, 64) * 2
        == runner.run(jax.random.key(0), data, num_epochs=2, init_state=result.state).losses.shape[
            0
        ]
    )


def test_ensemble_run_is_independent_single_runs(sims, runner):
    """Member e of a vmapped run == the single-member runner seeded with split(key, E)[e]."""
    ensemble = ps.train.Runner(runner.objective, runner.optimizer, runner.batch_size, members=3)
    data, key = sims.as_batch(), jax.random.key(7)
    res = ensemble.run(key, data, num_steps=10)
    assert res.losses.shape == (3, 10)
    for e, k in enumerate(ensemble.member_keys(key)):
        one = runner.run(k, data, num_steps=10)
        member = jax.tree.map(lambda a, e=e: a[e], res.state.params)
        # vmap batches the matmuls: float32 round-off only
        _assert_trees_close(member, one.state.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.losses[e], one.losses, rtol=1e-5)
    # different members really differ
    p = jax.tree.leaves(res.state.params)[0]
    assert not np.allclose(p[0], p[1])


def _snpe_batch(sims):
    """Prior draws with the SNPE columns (log_prior of N(0, I), up to a constant)."""
    log_prior = -0.5 * np.sum(np.asarray(sims.theta, np.float64) ** 2, axis=-1)
    return {**sims.as_batch(), "log_prior": log_prior, "log_proposal": log_prior}


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ps.npe(ps.nn.maf(**TINY)), id="npe", marks=pytest.mark.slow),
        pytest.param(
            lambda: ps.nre_b(ps.nn.mlp_classifier(hidden_features=8)),
            id="nre_b",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda: ps.nre_a(ps.nn.mlp_classifier(hidden_features=8)),
            id="nre_a",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda: ps.nre_c(ps.nn.mlp_classifier(hidden_features=8)),
            id="nre_c",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda: ps.bnre(ps.nn.mlp_classifier(hidden_features=8)),
            id="bnre",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda: ps.objectives.snpe_c(ps.nn.maf(**TINY)), id="snpe_c", marks=pytest.mark.slow
        ),
    ],
)
def test_every_objective_runs_as_an_ensemble(make, sims, request):
    """Runner(members=2) works for each objective and gives a usable ensemble estimator."""
    objective = make()
    runner = ps.train.Runner(
        objective, ps.TrainConfig(learning_rate=3e-3).make_optimizer(300), 50, members=2
    )
    data = _snpe_batch(sims) if request.node.callspec.id == "snpe_c" else sims.as_batch()
    res = runner.run(jax.random.key(0), data, num_epochs=8)
    losses = np.asarray(res.losses)
    assert losses.shape == (2, 48) and np.all(np.isfinite(losses))
    assert np.all(losses[:, -6:].mean(1) < losses[:, :6].mean(1))  # both members learn
    est = runner.estimator(res.state, sims.spec, sims.x_shape)
    assert est.members == 2
    x, th = sims.x[:20], sims.theta[:20]
    if est.kind == "nre":
        values, members = est.log_ratio(x, th), est.member_log_ratio(x, th)
    else:
        values, members = est.log_prob(x, th), est.member_log_prob(x, th)
    expected = np.logaddexp(members[0], members[1]) - np.log(2.0)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
