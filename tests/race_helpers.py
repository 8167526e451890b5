"""A small race-model MNLE trained once per test process (shared by the hierarchical tests)."""

import functools

import numpy as np
import pymc as pm

import pymc_sbi as ps
from pymc_sbi.benchmarks import race


@functools.lru_cache(maxsize=1)
def race_simulations(n: int = 8000):
    return ps.simulate(
        race.prior_model(),
        race.simulator,
        n,
        seed=0,
        covariates=race.stimulus_design,
        progressbar=False,
    )


@functools.lru_cache(maxsize=1)
def race_mnle():
    """~10 s on one core: 8,000 single trials, 25 epochs of a small MDN-based MNLE.

    Cosine-decayed Adam from 3e-3 (``ps.cosine_recipe``): with a constant
    3e-3 the best validation epoch was the 7th (loss 0.2575, and the SBC of the
    term gave p = 0.001-0.004 for ``b`` at seed 0); decayed, the 11th (0.2537,
    p = 0.024).
    """
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=3, hidden_features=32), hidden_features=32)
    sims = race_simulations()
    config = ps.cosine_recipe(epochs=25, learning_rate=3e-3, batch_size=256)
    return ps.fit(ps.mnle(net), sims, config, seed=1, progressbar=False)


@functools.lru_cache(maxsize=1)
def race_mnle_shared():
    """:func:`race_mnle` with ``shared_trunk=True`` (same data, budget and MDN size)."""
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=3), hidden_features=32, shared_trunk=True)
    sims = race_simulations()
    config = ps.cosine_recipe(epochs=25, learning_rate=3e-3, batch_size=256)
    return ps.fit(ps.mnle(net), sims, config, seed=1, progressbar=False)


# ------------------------------------------- a grouped race model (dedup tests)
J, T = 3, 200
DATA = race.hierarchical_data(J, T, seed=5)
POINT = {
    "sigma_interval__": 0.1,
    "v": np.array([0.8, 1.1, 1.3]),
    "b": np.array([-0.5, -0.3, -0.6]),
}


def grouped_model(est, deduplicate, covariates="design", observed=None, **kwargs):
    """Per-subject parameters, data ``(J, T, 2)``; ``covariates=None`` for an estimator without."""
    if isinstance(covariates, str):
        covariates = DATA["s"].reshape(J, T)
    with pm.Model(coords={"subject": np.arange(J)}) as model:
        sigma = pm.Uniform("sigma", 0.3, 1.2)
        v = pm.Normal("v", 1.0, 0.3, dims="subject")
        b = pm.Normal("b", -0.5, 0.3, dims="subject")
        ps.NeuralLikelihood(
            "x",
            est,
            {"v": v, "b": b, "sigma": sigma},
            observed=DATA["x"].reshape(J, T, 2) if observed is None else observed,
            covariates=covariates,
            deduplicate=deduplicate,
            **kwargs,
        )
    return model


def pointwise_and_grad(model, point):
    values = model.compile_logp(vars=[model["x"]], sum=False)(point)[0]
    return values, model.compile_dlogp()(point)


def assert_same(model_a, model_b, point):
    va, ga = pointwise_and_grad(model_a, point)
    vb, gb = pointwise_and_grad(model_b, point)
    assert va.shape == vb.shape
    # float32 network: per-trial values agree to float32 rounding, gradients likewise
    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-4 * np.max(np.abs(gb)))
