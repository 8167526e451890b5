r"""Proposals for sequential rounds from a PyMC inference model's posterior.

A likelihood or ratio term in a ``pm.Model`` receives a flat parameter vector
per trial, assembled from the model's variables (``v[subject_idx]``, per-group
parameters broadcast to their trials, ...).  The next round of a sequential
method must simulate at *those* parameters, with each trial's covariates:
:func:`term_parameter_draws` evaluates the term's parameter graph (recorded by
:mod:`pymc_sbi.terms`) on every posterior draw, and the driver draws
(posterior draw, trial) pairs uniformly from the result, so a group with more
trials gets proportionally more simulations.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from xarray import DataTree

from pymc_sbi.estimator import Estimator

__all__ = ["default_inference_model", "draw_pairs", "posterior_matrix", "term_parameter_draws"]


def default_inference_model(prior_model: pm.Model, estimator: Estimator, x_obs) -> pm.Model:
    """A copy of ``prior_model`` with the estimator as a term observing ``x_obs``.

    ``NeuralLikelihood`` for NLE, ``NeuralRatio`` for NRE, named ``"x_obs"``,
    with every parameter of ``estimator.spec`` taken from the model's variable
    of the same name; ``x_obs`` may hold i.i.d. trials ``(n, *x_shape)``.
    """
    from pymc.model.fgraph import clone_model

    from pymc_sbi.likelihood import NeuralLikelihood
    from pymc_sbi.ratio import NeuralRatio

    if estimator.n_covariates:
        raise ValueError(
            "The estimator has per-trial covariates; pass model_builder=(estimator -> pm.Model) "
            "with the covariates of the observed trials."
        )
    model = clone_model(prior_model)
    params = {name: model[name] for name in estimator.spec.names}
    term = NeuralRatio if estimator.kind == "nre" else NeuralLikelihood
    with model:
        term("x_obs", estimator, params=params, observed=np.asarray(x_obs))
    return model


def _find_term(model: pm.Model, term_name: str | None) -> str:
    from pymc_sbi.terms import _TERMS

    names = sorted(_TERMS.get(model, {}))
    if term_name is not None:
        return term_name
    if len(names) != 1:
        raise ValueError(
            f"The inference model has {len(names)} pymc_sbi neural terms ({names}); the "
            "proposal needs exactly one, or term_name= to choose."
            + (" Build the terms inside the model that model_builder returns." if not names else "")
        )
    return names[0]


def term_parameter_draws(
    model: pm.Model, posterior: DataTree, term_name: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """The parameters (and covariates) a neural term sees, at every posterior draw.

    Parameters
    ----------
    model
        A model with one pymc_sbi neural term (or several, and ``term_name``).
    posterior
        Its posterior draws (``pm.sample`` / :func:`pymc_sbi.sample` DataTree)
        holding every free variable.
    term_name
        The term's name, if the model has several.

    Returns
    -------
    (theta, covariates, batch)
        ``theta`` ``(draws, *theta_batch, d)``: the term's flat parameter
        vector at each draw (``theta_batch`` per trial / per group, or ``()``
        for shared parameters); ``covariates`` ``(*cov_batch, c)`` or ``None``;
        ``batch``: the trial axes of the observations, to which both broadcast.
    """
    import pytensor
    from pymc.sampling.jax import get_jaxified_graph
    from pytensor.graph.replace import graph_replace
    from pytensor.graph.traversal import ancestors

    from pymc_sbi.terms import term_info

    info = term_info(model, _find_term(model, term_name))
    free = list(model.free_RVs)
    placeholders = [rv.type() for rv in free]
    theta = graph_replace([info.theta], dict(zip(free, placeholders, strict=True)), strict=False)
    theta = theta[0]
    fn = get_jaxified_graph(inputs=placeholders, outputs=[theta])
    post = posterior.posterior if hasattr(posterior, "posterior") else posterior
    values = []
    for rv in free:
        if rv.name not in post:
            raise ValueError(
                f"The posterior lacks free variable {rv.name!r}; sample all free variables."
            )
        arr = np.asarray(post[rv.name].values, np.float64)
        values.append(arr.reshape(-1, *arr.shape[2:]))
    batched = jax.jit(jax.vmap(lambda *v: fn(*v)[0]))
    theta_draws = np.asarray(batched(*(jnp.asarray(v) for v in values)), np.float64)
    cov = None
    if info.covariates is not None:
        if any(v in set(free) for v in ancestors([info.covariates])):
            raise ValueError("The term's covariates depend on free variables; they must be data.")
        cov = np.asarray(pytensor.function([], info.covariates)(), np.float64)
    k = len(info.estimator.x_shape)
    obs = info.observed
    obs_shape = tuple(obs.type.shape) if hasattr(obs, "type") else np.shape(obs)
    if hasattr(obs, "type") and any(s is None for s in obs_shape):
        obs_shape = tuple(obs.shape.eval())
    shapes = [theta_draws.shape[1:-1], tuple(obs_shape[: len(obs_shape) - k])]
    if cov is not None:
        shapes.append(cov.shape[:-1])
    return theta_draws, cov, tuple(np.broadcast_shapes(*shapes))


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


def posterior_matrix(posterior: DataTree, spec) -> np.ndarray:
    """Draws of the spec's parameters from a DataTree as an ``(n_draws, d)`` matrix."""
    post = posterior.posterior if hasattr(posterior, "posterior") else posterior
    values = {}
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        values[name] = np.asarray(post[name].values, np.float64).reshape(-1, *shape)
    return spec.flatten(values)
