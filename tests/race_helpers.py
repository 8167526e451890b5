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
        progress=False,
    )


@functools.lru_cache(maxsize=1)
def race_mnle():
    """~10 s on one core: 8,000 single trials, 25 epochs of a small MDN-based MNLE."""
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=3, hidden_features=32), hidden_features=32)
    return ps.fit(
        ps.mnle(net),
        race_simulations(),
        seed=1,
        max_epochs=25,
        batch_size=256,
        learning_rate=3e-3,
        progress=False,
    )
