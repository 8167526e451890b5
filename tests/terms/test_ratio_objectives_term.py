"""Every ratio objective (NRE-A/B/C, BNRE) as a ``NeuralRatio`` term, sampled by NUTS.

The linear-Gaussian grid tests in ``test_nre.py`` check each estimator's ratio;
here each trained estimator goes through the PyMC term and NUTS (PyMC's numpyro
path and pymc_sbi's own BlackJAX sampler), and the draws are compared with the
grid posterior of the *same* estimator, so the tolerance is Monte Carlo error
only: mean and sd within 4 MCSE (tests/mcse.py).
"""

import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse
from scipy import stats

import pymc_sbi as ps

X_OBS = np.array([0.6, 0.2])
OBJECTIVES = {"nre_b": ps.nre_b, "nre_c": ps.nre_c, "bnre": ps.bnre}


@pytest.fixture(scope="module")
def estimator(request, lg_sims):
    make = OBJECTIVES[request.param]
    net = ps.nn.mlp_classifier(hidden_features=32)
    return ps.fit(
        make(net), lg_sims, ps.TrainConfig(max_epochs=60, patience=10), seed=2, progressbar=False
    )


def grid_moments(estimator, half=4.0, n=201):
    g = np.linspace(-half, half, n)
    theta = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], -1)
    lp = np.asarray(estimator.log_ratio(X_OBS, theta), np.float64)
    lp = lp + stats.norm.logpdf(theta).sum(-1)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    mean = w @ theta
    return mean, np.sqrt(w @ (theta - mean) ** 2)


def check(idata, estimator):
    mean, sd = grid_moments(estimator)
    draws = idata.posterior["theta"].values  # (chains, draws, 2)
    assert_mean_within_mcse(draws, mean, chains=True)
    assert_sd_within_mcse(draws, sd, chains=True)


def ratio_model(estimator):
    with pm.Model() as model:
        theta = pm.Normal("theta", 0, 1, shape=2)
        ps.NeuralRatio("x", estimator, params={"theta": theta}, observed=X_OBS)
    return model


FAST = {"nre_b": "numpyro", "nre_c": "blackjax-nuts", "bnre": "blackjax-nuts"}
CASES = [
    pytest.param(name, sampler, marks=() if FAST[name] == sampler else pytest.mark.slow)
    for name in sorted(OBJECTIVES)
    for sampler in ("numpyro", "blackjax-nuts")
]


@pytest.mark.parametrize(("estimator", "sampler"), CASES, indirect=["estimator"])
def test_ratio_term_under_nuts_matches_its_grid(estimator, sampler):
    """One sampler per objective in the default run; the full cross product with ``-m slow``."""
    model = ratio_model(estimator)
    if sampler == "numpyro":
        with model:
            idata = pm.sample(
                1000,
                tune=500,
                chains=4,
                random_seed=3,
                progressbar=False,
                nuts_sampler="numpyro",
                nuts={"chain_method": "vectorized"},
                compute_convergence_checks=False,
            )
    else:
        idata = ps.sample(model, draws=1000, tune=500, chains=4, seed=3, progressbar=False)
    check(idata, estimator)
