"""fit() and the primitives it drives: reproducibility, custom loops, stopping, NaN guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pymc_sbi as ps

SMALL = dict(hidden_features=16, num_transforms=2)


def _leaves_equal(a, b, rtol=0.0, atol=0.0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return all(np.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(la, lb, strict=True))


def test_same_seed_same_estimator(lg_sims):
    config = ps.TrainConfig(max_epochs=3)
    a = ps.fit(ps.nle(ps.nn.maf(**SMALL)), lg_sims, config, seed=3, progressbar=False)
    b = ps.fit(ps.nle(ps.nn.maf(**SMALL)), lg_sims, config, seed=3, progressbar=False)
    c = ps.fit(ps.nle(ps.nn.maf(**SMALL)), lg_sims, config, seed=4, progressbar=False)
    assert _leaves_equal(a.params, b.params)
    assert not _leaves_equal(c.params, a.params)
    assert a.history["train_loss"] == b.history["train_loss"]


def test_custom_loop_reproduces_fit(lg_sims):
    """The loop written in the training module's docstring gives fit's parameters."""
    objective = ps.nle(ps.nn.maf(**SMALL))
    seed, epochs, batch_size = 5, 3, 128
    est = ps.fit(
        objective,
        lg_sims,
        ps.TrainConfig(max_epochs=epochs, patience=100, batch_size=batch_size),
        seed=seed,
        progressbar=False,
    )

    k_split, k_init, k_loop = jax.random.split(jax.random.key(seed), 3)
    train, val = ps.train.train_validation_split(k_split, lg_sims.as_batch(), 0.1)
    state = objective.init(k_init, train, ps.TrainConfig().make_optimizer(len(train["theta"])))
    step = jax.jit(objective.step)
    best, best_loss = None, np.inf
    for _ in range(epochs):
        k_loop, k_epoch, k_eval = jax.random.split(k_loop, 3)
        idx, keys = ps.train.epoch_batches(k_epoch, train["theta"].shape[0], batch_size)
        for i in range(idx.shape[0]):
            state, _ = step(keys[i], state, ps.train.take(train, idx[i]))
        val_loss = float(objective.evaluate(k_eval, state, val)["loss"])
        if val_loss < best_loss:
            best, best_loss = state.params, val_loss
    # the only difference is lax.scan vs a Python loop: float32 round-off
    assert _leaves_equal(est.params, best, rtol=1e-4, atol=1e-5)
    assert est.history["best_val_loss"] == pytest.approx(best_loss, rel=1e-4)


def test_training_improves_and_early_stopping(lg_nle, lg_sims):
    h = lg_nle.history
    assert h["stop_reason"] in {"early_stopping", "max_epochs"}
    assert h["epochs"] == len(h["train_loss"]) == len(h["val_loss"])
    assert h["best_val_loss"] == min(h["val_loss"])
    if h["stop_reason"] == "early_stopping":
        assert h["epochs"] - 1 - h["best_epoch"] == 10  # patience=10 in the fixture
    # the trained surrogate beats its own untrained start by a wide margin; the exact
    # Gaussian log-likelihood per sample is -log(2 pi) - 0.5 log det(S) - 1 = -1.62...
    exact = -np.log(2 * np.pi) - 0.5 * np.log(np.linalg.det(np.array([[0.25, 0.15], [0.15, 0.25]])))
    assert h["best_val_loss"] == pytest.approx(-(exact - 1.0), abs=0.08)


def _nan_after(k):
    """An optimizer that behaves like SGD for k steps and then returns NaN updates."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        scale = jnp.where(count < k, -1e-3, jnp.nan)
        return jax.tree.map(lambda g: scale * g, updates), count + 1

    return optax.GradientTransformation(init, update)


def test_nan_loss_stops_and_keeps_best(lg_sims):
    n_train = int(0.9 * len(lg_sims))
    steps_per_epoch = n_train // 200
    with pytest.warns(RuntimeWarning, match="Non-finite loss at epoch 2"):
        est = ps.fit(
            ps.nle(ps.nn.maf(**SMALL)),
            lg_sims,
            ps.TrainConfig(optimizer=_nan_after(2 * steps_per_epoch + 3), max_epochs=10),
            seed=0,
            progressbar=False,
        )
    assert est.history["stop_reason"] == "non_finite_loss"
    assert est.history["epochs"] == 2
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(est.params))
    assert np.isfinite(est.log_prob(np.zeros(2), np.zeros(2)))


def test_nan_from_the_start_raises(lg_sims):
    with pytest.raises(FloatingPointError, match="first epoch"), pytest.warns(RuntimeWarning):
        ps.fit(
            ps.nle(ps.nn.maf(**SMALL)),
            lg_sims,
            ps.TrainConfig(optimizer=_nan_after(0), max_epochs=3),
            seed=0,
            progressbar=False,
        )


def test_any_optax_optimizer_and_no_clipping(lg_sims):
    est = ps.fit(
        ps.nle(ps.nn.maf(**SMALL)),
        lg_sims,
        ps.TrainConfig(max_epochs=2, optimizer=optax.sgd(1e-3), clip_norm=None),
        seed=0,
        progressbar=False,
    )
    assert est.history["epochs"] == 2
    assert est.config["custom_optimizer"] is True


def test_split_and_batches():
    batch = {"theta": np.arange(20.0)[:, None], "x": np.arange(20.0)[:, None]}
    train, val = ps.train.train_validation_split(jax.random.key(0), batch, 0.25)
    assert train["theta"].shape == (15, 1) and val["theta"].shape == (5, 1)
    assert sorted(np.concatenate([train["x"], val["x"]]).ravel().tolist()) == list(range(20))
    np.testing.assert_array_equal(train["theta"], train["x"])  # rows stay paired
    idx, keys = ps.train.epoch_batches(jax.random.key(1), 15, 4)
    assert idx.shape == (3, 4) and keys.shape == (3,)
    assert len(set(np.asarray(idx).ravel().tolist())) == 12
    with pytest.raises(ValueError, match="validation_fraction"):
        ps.train.train_validation_split(jax.random.key(0), batch, 1.0)


def test_training_under_both_x64_settings(lg_sims, x64):
    """Training runs in float32 whatever the x64 flag; the estimator is float32.

    Every stored parameter too: MADE's masked layers once created float64
    kernels under x64 (``import pymc.sampling.jax`` turns it on), which made
    NSF/MAF training ~1.5x slower and seed-for-seed different.
    """
    config = ps.TrainConfig(max_epochs=2)
    for net in (ps.nn.maf(**SMALL), ps.nn.nsf(**SMALL)):
        est = ps.fit(ps.nle(net), lg_sims, config, seed=0, progressbar=False)
        assert est.dtype == jnp.float32
        assert {leaf.dtype for leaf in jax.tree.leaves(est.params)} == {jnp.dtype(jnp.float32)}
        # seed for seed the same training as with x64 off: the same losses and parameters up
        # to float32 round-off (the float64 simulations are cast at slightly different points)
        jax.config.update("jax_enable_x64", False)
        try:
            off = ps.fit(ps.nle(net), lg_sims, config, seed=0, progressbar=False)
        finally:
            jax.config.update("jax_enable_x64", True)
        np.testing.assert_allclose(off.history["val_loss"], est.history["val_loss"], rtol=1e-5)
        assert _leaves_equal(est.params, off.params, rtol=1e-4, atol=1e-5)
    lp64 = est.log_prob(np.zeros(2), np.zeros(2))
    assert lp64.dtype == jnp.float64  # float64 in, out
    # ... with the float32 network's value
    lp32 = est.log_prob(np.zeros(2, np.float32), np.zeros(2, np.float32))
    np.testing.assert_allclose(float(lp64), float(lp32), rtol=1e-6)


def test_cosine_recipe_fixed_schedule(lg_sims):
    """A fixed epoch budget: no early stopping, the best epoch still kept."""
    config = ps.cosine_recipe(epochs=3, learning_rate=1e-2, batch_size=250)
    assert config.max_epochs == 3 and config.patience is None and config.schedule == "cosine"
    est = ps.fit(ps.nle(ps.nn.maf(**SMALL)), lg_sims, config, seed=0, progressbar=False)
    assert est.history["epochs"] == 3
    assert est.history["stop_reason"] == "max_epochs"
    assert est.config["schedule"] == "cosine" and est.config["max_epochs"] == 3
    with pytest.raises(ValueError, match="max_epochs"):
        ps.cosine_recipe(epochs=0, learning_rate=1e-3)


def test_cosine_schedule_decays_to_the_final_fraction():
    """The learning rate the optimizer applies: eta_0 at step 0, f * eta_0 at the last step."""
    config = ps.cosine_recipe(epochs=4, learning_rate=1e-2, batch_size=10, clip_norm=None)
    tx = config.make_optimizer(100)  # 10 steps per epoch, 40 in all
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    first, _ = tx.update({"w": jnp.ones(())}, state, params)
    # Adam's first update is -lr * sign(g): the schedule's value at step 0
    assert float(first["w"]) == pytest.approx(-1e-2, rel=1e-4)
    for _ in range(40):  # steps 0..39; the next update is at step 40, the schedule's end
        _, state = tx.update({"w": jnp.ones(())}, state, params)
    last, _ = tx.update({"w": jnp.ones(())}, state, params)
    assert float(last["w"]) == pytest.approx(-1e-2 * 0.02, rel=1e-3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_epochs", 0),
        ("batch_size", 0),
        ("learning_rate", -1e-3),
        ("learning_rate", float("nan")),
        ("validation_fraction", 1.0),
        ("patience", 0),
        ("schedule", "linear"),
        ("batch_size", 2.5),
    ],
)
def test_config_rejects_bad_options_naming_them(field, value):
    with pytest.raises(ValueError, match=field):
        ps.TrainConfig(**{field: value})


def test_fit_rejects_a_float_seed(lg_sims):
    with pytest.raises(TypeError, match="seed must be an int or a JAX PRNG key"):
        ps.fit(ps.nle(), lg_sims, seed=1.5)


def test_compiled_init_equals_flax_init():
    """``init_params`` (one compiled program) gives ``module.init``'s parameters."""
    from pymc_sbi.objectives.base import init_params

    module = ps.nn.mlp_classifier().clone(features=3)
    theta, x = jnp.ones((1, 2)), jnp.ones((1, 3))
    key = jax.random.key(7)
    compiled, eager = init_params(module, key, theta, x), module.init(key, theta, x)
    assert _leaves_equal(compiled, eager, rtol=1e-6, atol=1e-7)


def test_optimizer_cache_tells_custom_optimizers_apart():
    """Equal settings share one optax object (so compiled steps are reused); different
    custom optimizers never do."""
    a, b = optax.sgd(1e-3), optax.sgd(1e-3)
    assert ps.TrainConfig().make_optimizer(100) is ps.TrainConfig().make_optimizer(500)
    assert ps.TrainConfig(optimizer=a).make_optimizer(100) is not (
        ps.TrainConfig(optimizer=b).make_optimizer(100)
    )
    cosine = ps.cosine_recipe(epochs=2, learning_rate=1e-3)
    assert cosine.make_optimizer(100) is not cosine.make_optimizer(1000)  # decay length differs
