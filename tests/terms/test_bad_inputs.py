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


def _wider_support_model(**kwargs):
    """Trained with sigma ~ HalfNormal ([0, inf)); here sigma is Normal and can go below 0."""
    with pm.Model() as model:
        mu, sigma = pm.Normal("mu"), pm.Normal("sigma", 1.0, 1.0)
        with pytest.warns(
            ps.terms.SupportWarning,
            match=r"'sigma' .* support \[-inf, inf\], but the estimator was trained on "
            r"\[0, inf\]; .*truncate_to_training_support=True",
        ):
            ps.NeuralLikelihood("rt", NLE, {"mu": mu, "sigma": sigma}, observed=np.zeros((3, 2)),
                                **kwargs)  # fmt: skip
    return model


INSIDE, OUTSIDE = {"mu": 0.1, "sigma": 0.5}, {"mu": 0.1, "sigma": -0.5}


@pytest.mark.parametrize("truncate", [False, True])
def test_a_wider_model_support_warns(truncate):
    model = _wider_support_model(truncate_to_training_support=truncate)
    logp, dlogp = model.compile_logp(), model.compile_dlogp()
    prior = model.compile_logp(vars=[model["mu"], model["sigma"]])
    # inside the training support the term is the network either way
    expected = float(np.sum(NLE.log_prob(np.zeros((3, 2)), np.array([0.1, 0.5]))))
    np.testing.assert_allclose(logp(INSIDE) - prior(INSIDE), expected, rtol=1e-5)
    outside = float(np.sum(NLE.log_prob(np.zeros((3, 2)), np.array([0.1, -0.5]))))
    if truncate:
        assert logp(OUTSIDE) == -np.inf  # not the network's extrapolation
        assert np.all(np.isfinite(dlogp(OUTSIDE)))  # samplers reject the step, no crash
    else:  # the network's extrapolation, announced by the warning
        np.testing.assert_allclose(logp(OUTSIDE) - prior(OUTSIDE), outside, rtol=1e-5)


def test_matching_support_and_indexed_parameters_do_not_warn():
    with pm.Model():
        mu = pm.Normal("mu", shape=3)
        sigma = pm.HalfNormal("sigma", shape=3)
        idx = np.array([0, 1, 2, 2])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", ps.terms.SupportWarning)
            ps.NeuralLikelihood(
                "rt", NLE, {"mu": mu[idx], "sigma": sigma[idx]}, observed=np.zeros((4, 2))
            )


def test_an_indexed_parameter_with_a_wider_support_warns_too():
    with pm.Model():
        mu = pm.Normal("mu", shape=2)
        sigma = pm.Normal("sigma", 1.0, 0.1, shape=2)
        with pytest.warns(ps.terms.SupportWarning, match="'sigma'"):
            ps.NeuralLikelihood(
                "rt", NLE, {"mu": mu[[0, 1]], "sigma": sigma[[0, 1]]}, observed=np.zeros((2, 2))
            )


@pytest.mark.parametrize(
    ("mu_shape", "observed_shape"),
    [((3,), (2,)), ((3,), (4, 2)), ((2, 3), (2, 4, 2)), ((3, 1, 1), (3, 4, 2))],
)
def test_a_parameter_batch_the_observations_lack_names_the_variable(mu_shape, observed_shape):
    with pm.Model():
        mu, sigma = pm.Normal("mu", shape=mu_shape), pm.HalfNormal("sigma")
        with pytest.raises(ValueError, match=r"Term 'rt': parameter 'mu' has batch shape"):
            ps.NeuralLikelihood("rt", NLE, {"mu": mu, "sigma": sigma},
                                observed=np.zeros(observed_shape))  # fmt: skip


@pytest.mark.parametrize(
    ("mu_shape", "observed_shape"), [((4,), (4, 2)), ((3,), (3, 5, 2)), ((1,), (4, 2))]
)
def test_per_trial_per_group_and_broadcast_batches_are_accepted(mu_shape, observed_shape):
    with pm.Model() as model:
        mu, sigma = pm.Normal("mu", shape=mu_shape), pm.HalfNormal("sigma")
        ps.NeuralLikelihood("rt", NLE, {"mu": mu, "sigma": sigma},
                            observed=np.zeros(observed_shape))  # fmt: skip
    point = model.initial_point()
    # mu = 0, sigma = 1 at the initial point: every trial has the same value
    lik = model.compile_logp(vars=[model["rt"]])(point)
    one = float(NLE.log_prob(np.zeros(2), np.array([0.0, 1.0])))
    np.testing.assert_allclose(lik, one * np.prod(observed_shape[:-1]), rtol=1e-5)
