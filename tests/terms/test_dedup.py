"""One network pass per distinct context (pymc_sbi.terms.dedup): same values and gradients."""

import dataclasses

import numpy as np
import pymc as pm
from race_helpers import (
    DATA,
    POINT,
    J,
    T,
    assert_same,
    grouped_model,
    pointwise_and_grad,
    race_mnle,
    race_simulations,
)

import pymc_sbi as ps
from pymc_sbi.terms.dedup import plan_contexts, supports_deduplication


def test_plan_counts_distinct_group_covariate_contexts():
    est = race_mnle()
    assert supports_deduplication(est)
    s = DATA["s"].reshape(J, T, 1)
    plan = plan_contexts(est, (J, T), (J, 1), s)
    expected = sum(len(np.unique(s[j])) for j in range(J))  # 8 stimulus levels per subject
    assert plan.n_contexts == expected <= 24
    assert plan.index.shape == (J * T,)
    # every trial's context is its own (group, covariate)
    groups = np.repeat(np.arange(J), T)
    np.testing.assert_array_equal(plan.group[plan.index], groups)
    np.testing.assert_array_equal(plan.covariates[plan.index, 0], s.ravel())
    # per-trial parameters (theta batch == data batch): nothing to share, no plan
    assert plan_contexts(est, (J * T,), (J * T,), s.reshape(-1, 1)) is None


def test_grouped_mnle_matches_per_trial_evaluation():
    est = race_mnle()
    assert_same(grouped_model(est, True), grouped_model(est, False), POINT)


def test_shared_parameters_flat_trials_and_invalid_categories():
    est = race_mnle()
    x = DATA["x"].copy()
    x[5, 1] = 2.0  # a category the estimator never saw: -inf either way
    x[7, 1] = 0.5  # not an integer category

    def model(deduplicate):
        with pm.Model() as m:
            v = pm.Normal("v", 1.0, 0.3)
            b = pm.Normal("b", -0.5, 0.3)
            ps.NeuralLikelihood(
                "x",
                est,
                {"v": v, "b": b, "sigma": 0.6},
                observed=x,
                covariates=DATA["s"],
                deduplicate=deduplicate,
                check_training_range=False,
            )
        return m

    point = {"v": 0.9, "b": -0.4}
    m1 = model(True)
    a = m1.compile_logp(vars=[m1["x"]], sum=False)(point)[0]
    m0 = model(False)
    b = m0.compile_logp(vars=[m0["x"]], sum=False)(point)[0]
    assert np.isneginf(a[5]) and np.isneginf(a[7])
    finite = np.isfinite(b)
    np.testing.assert_array_equal(np.isfinite(a), finite)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-5, atol=1e-5)


def test_ensemble_and_nle_mdn_match_per_trial_evaluation():
    sims = race_simulations()
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=2, hidden_features=16), hidden_features=16)
    ens = ps.fit_ensemble(
        ps.mnle(net),
        sims,
        ps.TrainConfig(max_epochs=2, batch_size=512),
        num_members=2,
        seed=0,
        progressbar=False,
    )
    assert_same(grouped_model(ens, True), grouped_model(ens, False), POINT)

    # NLE with an MDN on the continuous part only, no covariates: one context per subject
    cont = dataclasses.replace(sims, x=sims.x[:, :1], covariates=None)
    nle = ps.fit(
        ps.nle(ps.nn.mdn(num_components=2, hidden_features=16)),
        cont,
        ps.TrainConfig(max_epochs=2),
        seed=0,
        progressbar=False,
    )
    assert supports_deduplication(nle)

    def model(deduplicate):
        obs = DATA["x"][:, :1].reshape(J, T, 1)
        return grouped_model(
            nle, deduplicate, covariates=None, observed=obs, check_training_range=False
        )

    assert_same(model(True), model(False), POINT)


def test_pm_data_covariates_are_evaluated_per_trial_and_stay_correct():
    est = race_mnle()
    with pm.Model(coords={"subject": np.arange(J)}) as model:
        s = pm.Data("s", DATA["s"].reshape(J, T))
        sigma = pm.Uniform("sigma", 0.3, 1.2)
        v = pm.Normal("v", 1.0, 0.3, dims="subject")
        b = pm.Normal("b", -0.5, 0.3, dims="subject")
        ps.NeuralLikelihood(
            "x",
            est,
            {"v": v, "b": b, "sigma": sigma},
            observed=DATA["x"].reshape(J, T, 2),
            covariates=s,
        )
    before = pointwise_and_grad(model, POINT)[0]
    np.testing.assert_allclose(
        before, pointwise_and_grad(grouped_model(est, True), POINT)[0], rtol=1e-5, atol=1e-5
    )
    with model:  # the covariates can change after the term is built
        pm.set_data({"s": -DATA["s"].reshape(J, T)})
    after = pointwise_and_grad(model, POINT)[0]
    expected = pointwise_and_grad(grouped_model(est, False, -DATA["s"].reshape(J, T)), POINT)[0]
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)


def test_small_data_keep_the_per_trial_path():
    est = race_mnle()
    n_trials = 30
    s = DATA["s"][:n_trials].reshape(n_trials, 1)
    assert len(np.unique(s)) == 8
    # 8 levels x 2 categories x saving factor 2 = 32 rows > 30 trials: not worth a gather
    assert plan_contexts(est, (n_trials,), (), s) is None
    assert plan_contexts(est, (n_trials,), (), s, min_saving=1.0) is not None
