r"""Proposals for sequential rounds from a PyMC inference model's posterior.

A likelihood or ratio term in a ``pm.Model`` receives a flat parameter vector
per trial, assembled from the model's variables (``v[subject_idx]``, per-group
parameters broadcast to their trials, ...).  The next round of a sequential
method must simulate at *those* parameters, with each trial's covariates:
:func:`pymc_sbi.terms.draws.term_draws` evaluates the term's parameter graph (recorded by
:mod:`pymc_sbi.terms.core`) on every posterior draw, and the driver draws
(posterior draw, trial) pairs uniformly from the result, so a group with more
trials gets proportionally more simulations.
"""

from __future__ import annotations

import math

import numpy as np
import pymc as pm
from pymc.model.fgraph import clone_model

from pymc_sbi.estimator import Estimator
from pymc_sbi.terms.likelihood import NeuralLikelihood
from pymc_sbi.terms.ratio import NeuralRatio

__all__ = ["default_inference_model", "draw_pairs"]


def default_inference_model(prior: pm.Model, estimator: Estimator, x_obs) -> pm.Model:
    """A copy of ``prior`` with the estimator as a term observing ``x_obs``.

    ``NeuralLikelihood`` for NLE, ``NeuralRatio`` for NRE, named ``"x_obs"``,
    with every parameter of ``estimator.spec`` taken from the model's variable
    of the same name; ``x_obs`` may hold i.i.d. trials ``(n, *x_shape)``.
    """
    if estimator.n_covariates:
        raise ValueError(
            "The estimator has per-trial covariates; pass model_builder=(estimator -> pm.Model) "
            "with the covariates of the observed trials."
        )
    model = clone_model(prior)
    params = {name: model[name] for name in estimator.spec.names}
    term = NeuralRatio if estimator.role == "ratio" else NeuralLikelihood
    with model:
        term("x_obs", estimator, params=params, observed=np.asarray(x_obs))
    return model


def draw_pairs(theta_draws, cov, batch, n: int, rng: np.random.Generator):
    """``n`` (draw, trial) pairs, uniform over the broadcast pool (no repeats if it is large)."""
    n_draws, d = theta_draws.shape[0], theta_draws.shape[-1]
    pool = n_draws * math.prod(batch)
    flat = rng.choice(pool, n, replace=pool < n)
    s, trial = np.divmod(flat, math.prod(batch))
    multi = np.unravel_index(trial, batch) if batch else ()
    tb = theta_draws.shape[1:-1]
    padded = theta_draws.reshape(n_draws, *((1,) * (len(batch) - len(tb))), *tb, d)
    view = np.broadcast_to(padded, (n_draws, *batch, d))  # a view: nothing is copied
    theta = view[(s, *multi)]
    if cov is None:
        return theta, None
    cview = np.broadcast_to(cov, (*batch, cov.shape[-1]))
    return theta, cview[tuple(multi)] if batch else np.broadcast_to(cview, (n, cov.shape[-1]))
