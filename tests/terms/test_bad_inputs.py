"""Observations PyMC would silently impute (NaN, masked) are refused, naming the term."""

from pathlib import Path

import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps

DATA = Path(__file__).parents[1] / "data" / "estimators"
NLE = ps.load(DATA / "format1_nle_maf.safetensors")


def _x_with_nan():
    x = np.zeros((5, 2))
    x[3, 0] = np.nan
    return x


@pytest.mark.parametrize(
    ("observed", "message"),
    [
        (_x_with_nan(), r"Term 'rt': observed has 1 non-finite values .* index \(3, 0\)"),
        (np.ma.masked_invalid(_x_with_nan()), r"Term 'rt': observed is a masked array with 1"),
        (np.full((2, 2), np.inf), r"Term 'rt': observed has 4 non-finite values"),
    ],
)
def test_missing_observations_are_refused(observed, message):
    with pm.Model() as model:
        mu, sigma = pm.Normal("mu"), pm.HalfNormal("sigma")
        with pytest.raises(ValueError, match=message):
            ps.NeuralLikelihood("rt", NLE, {"mu": mu, "sigma": sigma}, observed=observed)
    # nothing was added: no imputed latent variable, no term
    assert [rv.name for rv in model.free_RVs] == ["mu", "sigma"]


def test_complete_observations_still_build_a_term():
    with pm.Model() as model:
        mu, sigma = pm.Normal("mu"), pm.HalfNormal("sigma")
        ps.NeuralLikelihood("rt", NLE, {"mu": mu, "sigma": sigma}, observed=np.zeros((5, 2)))
    logp = model.compile_logp()(model.initial_point())
    expected = float(np.sum(NLE.log_prob(np.zeros((5, 2)), np.array([0.0, 1.0]))))
    prior = model.compile_logp(vars=[model["mu"], model["sigma"]])(model.initial_point())
    np.testing.assert_allclose(logp - prior, expected, rtol=1e-5)
