"""Fixtures of the diagnostics tests: a small NPE and an exact "likelihood estimator"."""

from types import SimpleNamespace

import jax.numpy as jnp
import pytest

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian


@pytest.fixture(scope="session")
def exact_nle():
    """A stand-in NLE estimator whose log_prob is the exact linear-Gaussian likelihood.

    It tests the vectorised MCMC path (product posterior, unconstrained space,
    trials) against the analytic posterior without any network error.
    """
    spec = ps.param_spec(linear_gaussian.prior_model())
    loglik = jnp.vectorize(linear_gaussian.log_likelihood, signature="(d),(d)->()")

    def log_prob(x, theta):
        return loglik(theta, jnp.asarray(x))

    return SimpleNamespace(kind="nle", spec=spec, log_prob=log_prob, x_shape=(2,))


@pytest.fixture(scope="session")
def lg_npe_small():
    """A small MAF posterior on 3,000 linear-Gaussian simulations (a few seconds)."""
    sims = ps.simulate(
        linear_gaussian.prior_model(), linear_gaussian.simulator, 3000, seed=0, progressbar=False
    )
    return ps.fit(
        ps.npe(ps.nn.maf(hidden_features=32, num_transforms=2)),
        sims,
        ps.TrainConfig(batch_size=100, learning_rate=2e-3, max_epochs=80, patience=10),
        seed=1,
        progressbar=False,
    )
