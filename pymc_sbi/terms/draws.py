r"""Posterior draws in the estimator's parameter order, and the inputs a term sees.

Two questions every user of a neural term asks after sampling:

- *What are my draws as a matrix?* :func:`posterior_matrix` turns the
  ``posterior`` group of a DataTree into an ``(n, d)`` array whose columns
  follow the estimator's parameter spec (``estimator.spec.labels``): the
  layout :func:`pymc_sbi.diagnostics.c2st`, reference samples and
  ``estimator.log_prob`` expect.
- *What did the network receive?* In a hierarchical model the term's
  parameter vector is a graph of the free variables (``mu[subject_idx]``).
  :func:`term_draws` evaluates that graph at every posterior draw, giving the
  ``theta`` of each trial under the posterior: what range checks, predictive
  checks and sequential proposals need.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor
from pymc.sampling.jax import get_jaxified_graph
from pytensor.graph.replace import graph_replace
from pytensor.graph.traversal import ancestors

from pymc_sbi.spec import ParamSpec
from pymc_sbi.terms.core import model_terms, term_info

__all__ = ["TermDraws", "posterior_matrix", "term_draws"]


def _posterior_group(posterior: Any):
    """The ``posterior`` group of a DataTree / InferenceData, or the object itself."""
    if hasattr(posterior, "children") and "posterior" in posterior.children:
        return posterior["posterior"]
    return posterior.posterior if hasattr(posterior, "posterior") else posterior


def _thin(total: int, max_draws: int | None) -> np.ndarray:
    """Evenly spaced indices of ``min(total, max_draws)`` draws."""
    if max_draws is None or total <= max_draws:
        return np.arange(total)
    return np.linspace(0, total - 1, int(max_draws)).round().astype(int)


def posterior_matrix(posterior: Any, spec: ParamSpec | Any, *, max_draws: int | None = None):
    r"""Posterior draws as an ``(n, d)`` float64 matrix in the estimator's parameter order.

    Parameters
    ----------
    posterior
        A DataTree (``pm.sample``, :func:`pymc_sbi.sample`), an InferenceData or
        a posterior ``xarray.Dataset`` holding every variable of ``spec``, each
        with dimensions ``(chain, draw, *shape)``.
    spec
        A :class:`~pymc_sbi.ParamSpec`, or anything with a ``spec`` attribute
        (an :class:`~pymc_sbi.Estimator`, :class:`~pymc_sbi.Simulations`).
    max_draws
        Keep at most this many draws, evenly thinned over ``chain x draw``.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` with ``n = chains * draws`` (or ``max_draws``) and columns
        ``spec.labels`` (vector variables flattened in C order).

    Examples
    --------
    >>> theta = ps.posterior_matrix(idata, estimator)       # doctest: +SKIP
    >>> ps.diagnostics.c2st(theta, reference_samples)       # doctest: +SKIP
    """
    spec = getattr(spec, "spec", spec)
    post = _posterior_group(posterior)
    missing = [n for n in spec.names if n not in post]
    if missing:
        raise KeyError(
            f"The posterior lacks {missing}; it holds {sorted(post.data_vars)}. "
            "Sample every variable the estimator was trained with."
        )
    values = {}
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        arr = np.asarray(post[name].values, np.float64)
        if arr.shape[2:] != tuple(shape):
            raise ValueError(
                f"Posterior variable {name!r} has shape {arr.shape[2:]} per draw; the spec "
                f"has {tuple(shape)}."
            )
        values[name] = arr.reshape(-1, *shape)
    idx = _thin(next(iter(values.values())).shape[0], max_draws)
    return spec.flatten({n: v[idx] for n, v in values.items()})


class TermDraws(NamedTuple):
    """What a neural term received under the posterior (see :func:`term_draws`).

    Attributes
    ----------
    theta
        ``(S, *theta_batch, d)``: the term's flat parameter vector at each of
        ``S`` draws; ``theta_batch`` is per trial / per group, ``()`` when the
        parameters are shared.
    covariates
        ``(*cov_batch, c)`` per-trial covariates (data, the same at every
        draw), or ``None``.
    batch
        The trial axes of the observations, to which both broadcast.
    """

    theta: np.ndarray
    covariates: np.ndarray | None
    batch: tuple[int, ...]


def _find_term(model: pm.Model, name: str | None) -> str:
    names = sorted(model_terms(model))
    if name is not None:
        return name
    if len(names) != 1:
        raise ValueError(
            f"The model has {len(names)} pymc_sbi neural terms ({names}); pass the term's "
            "name to choose one."
        )
    return names[0]


def term_draws(
    model: pm.Model, posterior: Any, name: str | None = None, *, max_draws: int | None = None
) -> TermDraws:
    """Evaluate the parameters (and covariates) of neural term ``name`` at posterior draws.

    Parameters
    ----------
    model
        The model holding the term.
    posterior
        Its posterior draws (``pm.sample`` / :func:`pymc_sbi.sample` DataTree),
        holding every free variable.
    name
        The term's name; may be omitted when the model has exactly one.
    max_draws
        Keep at most this many draws, evenly thinned.

    Returns
    -------
    TermDraws
    """
    info = term_info(model, _find_term(model, name))
    free = list(model.free_RVs)
    placeholders = [rv.type() for rv in free]
    theta = graph_replace([info.theta], dict(zip(free, placeholders, strict=True)), strict=False)
    fn = get_jaxified_graph(inputs=placeholders, outputs=[theta[0]])
    post = _posterior_group(posterior)
    values = []
    for rv in free:
        if rv.name not in post:
            raise ValueError(
                f"The posterior lacks free variable {rv.name!r}; sample all free variables."
            )
        arr = np.asarray(post[rv.name].values, np.float64)
        values.append(arr.reshape(-1, *arr.shape[2:]))
    idx = _thin(values[0].shape[0], max_draws) if values else np.arange(1)
    batched = jax.jit(jax.vmap(lambda *v: fn(*v)[0]))
    theta_draws = np.asarray(batched(*(jnp.asarray(v[idx]) for v in values)), np.float64)
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
    return TermDraws(theta_draws, cov, tuple(np.broadcast_shapes(*shapes)))
