"""Fitting a continuous NLE density to integer-valued x warns; continuous x does not."""

import warnings

import jax
import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps


def _sims(simulator):
    with pm.Model() as prior:
        pm.Uniform("rate", 1.0, 5.0)
    return ps.simulate(prior, simulator, 200, seed=0, progressbar=False)


def test_counts_warn_for_nle():
    sims = _sims(lambda key, t: jax.random.poisson(key, t[0], (3,)).astype(float))
    with pytest.warns(ps.train.DiscreteDataWarning, match=r"integer-valued \(\d+ simulations"):
        ps.fit(ps.nle(ps.nn.maf(num_transforms=1, hidden_features=8)), sims,
               ps.TrainConfig(max_epochs=1), progressbar=False)  # fmt: skip


def test_dequantised_counts_and_npe_do_not_warn():
    def dequantised(key, t):
        k1, k2 = jax.random.split(key)
        return jax.random.poisson(k1, t[0], (3,)) + jax.random.uniform(k2, (3,))

    counts = _sims(lambda key, t: jax.random.poisson(key, t[0], (3,)).astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ps.train.DiscreteDataWarning)
        config = ps.TrainConfig(max_epochs=1)
        net = ps.nn.maf(num_transforms=1, hidden_features=8)
        ps.fit(ps.nle(net), _sims(dequantised), config, progressbar=False)
        ps.fit(ps.npe(net), counts, config, progressbar=False)  # x is only conditioned on
    assert np.all(counts.x == np.round(counts.x))
