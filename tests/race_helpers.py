"""A small race-model MNLE trained once per test process (shared by the hierarchical tests)."""

import functools

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
