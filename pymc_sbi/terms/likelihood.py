r"""A trained neural likelihood as an observed term of a ``pm.Model``.

``NeuralLikelihood("x", estimator, params={"mu": mu, "sigma": sigma}, observed=x_obs)``
adds the surrogate log-likelihood

.. math:: \sum_{n} \log q(x_n \mid \theta_n, s_n), \qquad
          \theta_n = \mathrm{concat}(\mathrm{ravel}(\mu_n), \mathrm{ravel}(\sigma_n), \dots)

to the model, one term per trial ``n`` (so pointwise log-likelihoods for
LOO/WAIC are per trial), with optional per-trial covariates :math:`s_n`.
Observations are laid out the PyMC way (see :mod:`pymc_sbi.terms.core`):

* ``(trials, *x_shape)`` with shared parameters, or with parameters indexed
  per trial (``mu[subject_idx]``; ragged groups);
* ``(groups, trials, *x_shape)`` with per-group parameters ``(groups,)``.

It is a ``pm.CustomDist`` whose ``logp`` is one batched JAX Op over all
trials (:mod:`pymc_sbi.terms.ops`, differentiable, with JAX dispatch) and whose
``random`` draws from the surrogate, so ``pm.sample`` (pymc, nutpie, numpyro
NUTS; Slice; SMC), ``pm.fit``, ``pm.sample_prior_predictive`` and
``pm.sample_posterior_predictive`` all work on it. Both NLE and MNLE
(mixed discrete/continuous data) estimators are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import pytensor.tensor as pt

from pymc_sbi.estimator import Estimator
from pymc_sbi.terms.core import check_observed, estimator_term, stack_params
from pymc_sbi.terms.range_check import check_range, constant_value

__all__ = ["NeuralLikelihood", "stack_params"]


def _random_fn(estimator: Estimator):
    sample = jax.jit(estimator.sample)

    def random(theta, rng, size, covariates=None):
        shapes = [theta.shape[:-1]] + ([] if covariates is None else [covariates.shape[:-1]])
        batch = tuple(size) if size is not None else np.broadcast_shapes(*shapes)
        theta = np.broadcast_to(theta, (*batch, theta.shape[-1]))
        if covariates is not None:
            covariates = np.broadcast_to(covariates, (*batch, covariates.shape[-1]))
        seed = (rng if rng is not None else np.random.default_rng()).integers(2**31)
        draws = sample(jax.random.key(int(seed)), theta, covariates=covariates)
        return np.asarray(draws, dtype=np.float64)

    return random


def NeuralLikelihood(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed=None,
    *,
    covariates=None,
    dims=None,
    check_training_range: bool = True,
    truncate_to_training_support: bool = False,
    deduplicate: bool = True,
    **kwargs,
) -> pt.TensorVariable:
    r"""Add a neural likelihood term to the current ``pm.Model``.

    Parameters
    ----------
    name
        Name of the observed variable.
    estimator
        A trained likelihood :class:`~pymc_sbi.Estimator` (``kind="nle"`` or ``"mnle"``).
    params
        ``{name: tensor}`` for every parameter the estimator was trained on
        (``estimator.spec.names``), each of trailing shape the spec's shape,
        with optional leading group/trial axes: shared ``()``, per trial
        ``(n_trials,)`` (e.g. ``mu[subject_idx]``) or, for observations
        ``(groups, trials, ...)``, per group ``(groups,)``.
    observed
        Observations ``(..., *estimator.x_shape)``; leading axes are i.i.d.
        trials (and groups) whose log-likelihoods are summed. ``None`` makes
        the term a latent variable drawn from the surrogate.
    covariates
        Per-trial covariates ``(..., c)`` (``(...,)`` when ``c == 1``), for an
        estimator trained on simulations with covariates; a NumPy array or a
        ``pm.Data`` tensor. Its batch axes are laid out like the observations'.
    dims
        PyMC dims of the variable (trial axes first, then the data axes).
    check_training_range
        Warn (:class:`~pymc_sbi.terms.range_check.OutOfRangeWarning`) when constant
        observations or covariates lie outside the training range.
    truncate_to_training_support
        ``True``: the term is ``-inf`` wherever a parameter lies outside the
        support it was trained on (``estimator.spec.lower``/``upper``), instead
        of the network's extrapolation. Off by default: hierarchical models
        often put wider priors on parameters trained on a bounded box, and a
        hard edge makes such models fail at their initial points. Either way a
        :class:`~pymc_sbi.terms.SupportWarning` names the variables whose model
        support is wider than their training support.
    deduplicate
        Evaluate the network once per distinct context (parameter group x
        covariate values) instead of once per trial, when the estimator allows
        it (an MDN, or MNLE with its default MDN flow), the observations and
        covariates are constants and that cuts the work at least in half
        (:mod:`pymc_sbi.terms.dedup`). Same values and gradients; ``False`` always
        evaluates per trial.
    **kwargs
        Passed to ``pm.CustomDist`` (e.g. ``shape``).

    Returns
    -------
    TensorVariable
        The observed random variable.

    Notes
    -----
    The log-density is :math:`\sum_n \log q(x_n \mid \theta_n, s_n)`; gradients
    with respect to every parameter come from JAX. Sampling with PyMC's own
    NUTS on several cores needs ``mp_ctx="forkserver"`` (see :mod:`pymc_sbi.terms.ops`).
    Posterior draws can be checked against the training range with
    :func:`pymc_sbi.check_posterior_range`, and against the real simulator with
    :func:`pymc_sbi.predictive_check`.
    """
    if estimator.role != "likelihood":
        raise ValueError(
            f"NeuralLikelihood needs a likelihood estimator (kind 'nle' or 'mnle'), got "
            f"kind={estimator.kind!r}."
        )
    check_observed(estimator, observed, name)  # shape errors first, before the range check reads x
    if check_training_range:
        x_val, cov_val = constant_value(observed), constant_value(covariates)
        if x_val is not None or cov_val is not None:
            cov_val = None if cov_val is None else np.reshape(cov_val, (-1, estimator.n_covariates))
            check_range(estimator, x=x_val, covariates=cov_val, where=f"term {name!r}")
    return estimator_term(
        name,
        estimator,
        params,
        observed,
        log_density=estimator.log_prob,
        random=_random_fn(estimator),
        label=f"{estimator.kind}_logp",
        covariates=covariates,
        dims=dims,
        deduplicate=deduplicate,
        truncate_support=truncate_to_training_support,
        **kwargs,
    )
