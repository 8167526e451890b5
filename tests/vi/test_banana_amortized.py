r"""Flows on a banana target (PSIS k-hat), and amortised VI on a conjugate Gaussian model.

Banana: theta_1 ~ N(0, 1), theta_2 | theta_1 ~ N(b (theta_1^2 - 1), 0.5^2), so
Z = pi (log Z = 1.1447) and no Gaussian fits it exactly.

Conjugate model: theta ~ N(0, I_2), x | theta ~ N(theta, 0.5^2 I_2), so
theta | x ~ N(0.8 x, 0.2 I_2).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

import pymc_sbi as ps
from pymc_sbi.vi import fit_vi, train_amortized


def banana(b):
    def logdensity_fn(theta):
        t1, t2 = theta[0], theta[1]
        return -0.5 * t1**2 - 0.5 * ((t2 - b * (t1**2 - 1.0)) / 0.5) ** 2

    return logdensity_fn


def fit_banana(family, b, max_iters, flow_kwargs=None, learning_rate=5e-3):
    return fit_vi(
        None,
        ps.vi.VIConfig(
            family=family,
            num_particles=64,
            learning_rate=learning_rate,
            max_iters=max_iters,
            check_convergence=False,
            flow_kwargs=flow_kwargs,
        ),
        logdensity_fn=banana(b),
        dim=2,
        seed=0,
        progressbar=False,
    )


def test_maf_banana_khat():
    post = fit_banana("maf", 1.0, 1000, {"num_transforms": 3, "hidden_features": 32})
    diag = post.evaluate(draws=4000, seed=0)
    assert diag.khat < 0.7
    assert diag.log_evidence == pytest.approx(math.log(math.pi), abs=0.05)
    assert diag.elbo < math.log(math.pi)  # a lower bound (up to MC error, KL > 0 here)


@pytest.mark.slow
def test_nsf_banana_khat_and_gaussian_fails():
    post = fit_banana(
        "nsf", 1.0, 3000, {"num_transforms": 3, "hidden_features": 32, "tail_bound": 5.0}
    )
    assert post.evaluate(draws=4000, seed=0).khat < 0.7
    gauss = fit_banana("gaussian", 1.0, 1000)
    # the full-rank Gaussian misses the curved tails: a clearly worse fit
    assert gauss.evaluate(draws=4000, seed=0).elbo < post.evaluate(draws=4000, seed=0).elbo - 0.2


# Amortisation slack of the one-transform flow trained for 2,500 steps over the x pool (not
# Monte Carlo; 4 MCSE of the 4,000 draws come on top). Measured at the two x_o: mean errors
# 0.05 and 0.10 posterior sd (each +- 0.016, its MCSE), sd errors 3 % at most.
AMORTIZATION_MEAN_ALLOWANCE = 0.09  # in posterior sds; + 4 MCSE: 0.155, inside the former 0.163
AMORTIZATION_SD_ALLOWANCE = 0.05  # relative; + 4 MCSE (4.5 %) stays inside the former 10 %


def test_amortized_conjugate_gaussian():
    with pm.Model() as prior:
        pm.Normal("theta", 0.0, 1.0, shape=2)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(2000, 2))
    x_pool = theta + 0.5 * rng.normal(size=(2000, 2))

    def log_likelihood(theta, x):
        return jnp.sum(-0.5 * ((x - theta) / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi)))

    post = train_amortized(
        prior,
        log_likelihood,
        x_pool,
        batch_size=64,
        seed=0,
        progressbar=False,
        config=ps.vi.VIConfig(
            flow_kwargs={"num_transforms": 1, "hidden_features": 16},
            num_particles=8,
            learning_rate=5e-3,
            lr_decay=0.999,
            max_iters=2500,
            check_convergence=False,
        ),
    )
    n = 4000
    sd = math.sqrt(0.2)
    for x_o in (np.array([0.5, -1.0]), np.array([2.0, 1.5])):
        draws = post.sample(x_o, draws=n, seed=1).posterior["theta"].values.reshape(-1, 2)
        allowance = AMORTIZATION_MEAN_ALLOWANCE * sd
        assert_mean_within_mcse(draws, 0.8 * x_o, allowance=allowance)
        assert_sd_within_mcse(draws, sd, allowance=AMORTIZATION_SD_ALLOWANCE * sd)
        cond = post.condition(x_o)
        diag = cond.evaluate(draws=2000, seed=2)
        assert diag.khat < 0.7
        # exact evidence: x ~ N(0, 1.25 I)
        log_z = float(np.sum(-0.5 * x_o**2 / 1.25 - 0.5 * math.log(2 * math.pi * 1.25)))
        assert diag.log_evidence == pytest.approx(log_z, abs=0.05)
        np.testing.assert_allclose(cond.map(seed=0)["theta"], 0.8 * x_o, atol=1e-3)
    with pytest.raises(ValueError, match="x must have shape"):
        post.sample(np.zeros(3))
