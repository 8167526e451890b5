"""Shared fixtures: one small NLE trained once per session on the linear-Gaussian task."""

import jax
import pytest

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian


@pytest.fixture
def x64():
    """Run a test with ``jax_enable_x64`` on, restoring the previous setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture
def no_x64():
    """Run a test with ``jax_enable_x64`` off, restoring the previous setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", old)


@pytest.fixture(scope="session")
def lg_sims():
    """4,000 linear-Gaussian simulations (prior N(0, I_2), correlated Gaussian noise)."""
    return ps.simulate(
        linear_gaussian.prior_model(), linear_gaussian.simulator, 4000, seed=0, progressbar=False
    )


@pytest.fixture(scope="session")
def lg_nle(lg_sims):
    """A small MAF likelihood trained on ``lg_sims`` (a few seconds)."""
    net = ps.nn.maf(hidden_features=32, num_transforms=2)
    return ps.fit(
        ps.nle(net),
        lg_sims,
        ps.TrainConfig(batch_size=100, learning_rate=2e-3, max_epochs=200, patience=10),
        seed=1,
        progressbar=False,
    )
