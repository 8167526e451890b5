r"""A ``pm.Model`` as pure JAX functions on one flat unconstrained vector.

Samplers and variational families want a log-density ``logdensity_fn(z)`` of a
flat vector ``z`` in R^D. PyMC's model log-density is a function of its value
variables, which live in the *unconstrained* space of the default transforms
(``sigma_log__`` for a ``HalfNormal``):

.. math::

    \log \pi(z) = \log p\big(T^{-1}(z)\big) + \log\left|\det J_{T^{-1}}(z)\right|,

Jacobian included. :func:`jax_model` compiles that graph through PyTensor's JAX
backend (neural terms inline as JAX code), ravels the value variables into one
vector, and gives the map back to the model's constrained variables
(deterministics included) plus an ArviZ ``DataTree`` builder with PyMC's names,
dims and coords, so every sampler and VI method of pymc_sbi returns what
``pm.sample`` would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from arviz_base import from_dict, make_attrs
from pymc.backends.arviz import coords_and_dims_for_inferencedata, find_constants, find_observations
from pymc.sampling.jax import get_jaxified_graph
from pymc.util import get_default_varnames
from xarray import DataTree

from pymc_sbi.prior import batched_prior_fn
from pymc_sbi.terms.ops import enable_x64_for_pytensor

__all__ = ["JaxModel", "jax_model", "prior_logdensity_fn", "prior_positions", "to_datatree"]


class JaxModel(NamedTuple):
    """A PyMC model as JAX functions of a flat unconstrained vector ``z`` of size ``dim``.

    Attributes
    ----------
    logdensity_fn
        ``z (dim,) -> log pi(z)``: the model's joint log-density in the
        unconstrained space, Jacobians included (unnormalised posterior).
    dim
        Size of ``z``.
    value_names, value_shapes
        The model's value variables (``sigma_log__``...) in ravel order.
    unravel
        ``z (dim,) -> list of arrays`` shaped as ``value_shapes``.
    constrained_fn
        ``z (dim,) -> dict`` of the model's constrained free variables and
        deterministics (the ``posterior`` group of ``pm.sample``).
    model
        The model itself (for names, coords and the ``DataTree``).
    """

    logdensity_fn: Callable[[jax.Array], jax.Array]
    dim: int
    value_names: tuple[str, ...]
    value_shapes: tuple[tuple[int, ...], ...]
    unravel: Callable[[jax.Array], list[jax.Array]]
    constrained_fn: Callable[[jax.Array], dict[str, jax.Array]]
    model: pm.Model


def _unravel_fn(shapes: Sequence[tuple[int, ...]]) -> Callable[[jax.Array], list[jax.Array]]:
    sizes = [math.prod(s) for s in shapes]
    offsets = np.cumsum([0, *sizes])

    def unravel(z: jax.Array) -> list[jax.Array]:
        return [z[offsets[i] : offsets[i + 1]].reshape(s) for i, s in enumerate(shapes)]

    return unravel


def jax_model(model: pm.Model | None = None, var_names: Sequence[str] | None = None) -> JaxModel:
    """Compile ``model``'s log-density and constrained variables into JAX functions.

    Parameters
    ----------
    model
        A ``pm.Model`` with continuous free variables (default: the model on the
        context stack). Neural terms of pymc_sbi lower to JAX like any other Op.
    var_names
        Constrained variables (free or deterministic) to return from
        ``constrained_fn`` (default: all, as ``pm.sample`` does).

    Raises
    ------
    ValueError
        For a model without free variables or with discrete ones.
    """
    enable_x64_for_pytensor()
    model = pm.modelcontext(model)
    if not model.free_RVs:
        raise ValueError("The model has no free random variables to sample.")
    discrete = [rv.name for rv in model.free_RVs if rv.type.dtype.startswith(("int", "uint"))]
    if discrete:
        raise ValueError(
            f"Free variable(s) {discrete} are discrete; pymc_sbi's samplers and VI work in a "
            "continuous unconstrained space. Marginalise them or use pm.sample."
        )
    value_vars = list(model.value_vars)
    shapes = model.eval_rv_shapes()
    value_shapes = tuple(tuple(int(s) for s in shapes[v.name]) for v in value_vars)
    unravel = _unravel_fn(value_shapes)

    logp_graph = get_jaxified_graph(inputs=value_vars, outputs=[model.logp()])

    def logdensity_fn(z: jax.Array) -> jax.Array:
        return logp_graph(*unravel(z))[0]

    outputs = list(get_default_varnames(model.unobserved_value_vars, include_transformed=False))
    if var_names is not None:
        known = {o.name for o in outputs}
        unknown = [n for n in var_names if n not in known]
        if unknown:
            raise ValueError(f"Unknown variable(s) {unknown}; the model has {sorted(known)}.")
        outputs = [o for o in outputs if o.name in set(var_names)]
    out_graph = get_jaxified_graph(inputs=value_vars, outputs=outputs)
    out_names = [o.name for o in outputs]

    def constrained_fn(z: jax.Array) -> dict[str, jax.Array]:
        return dict(zip(out_names, out_graph(*unravel(z)), strict=True))

    return JaxModel(
        logdensity_fn=logdensity_fn,
        dim=int(sum(math.prod(s) for s in value_shapes)),
        value_names=tuple(v.name for v in value_vars),
        value_shapes=value_shapes,
        unravel=unravel,
        constrained_fn=constrained_fn,
        model=model,
    )


def prior_logdensity_fn(jm: JaxModel) -> Callable[[jax.Array], jax.Array]:
    r"""``z (dim,) -> log p_0(z)``: the prior part of ``jm``'s log-density.

    The log-density of the free variables alone in the unconstrained space,
    Jacobians included, so that
    :math:`\log \pi(z) - \log p_0(z)` is the log-likelihood (observed terms
    and potentials, neural terms among them) at ``z``.
    """
    model = jm.model
    graph = get_jaxified_graph(
        inputs=list(model.value_vars), outputs=[model.logp(vars=model.free_RVs)]
    )

    def log_prior(z: jax.Array) -> jax.Array:
        return graph(*jm.unravel(z))[0]

    return log_prior


def prior_positions(model: pm.Model, n: int, seed: int | None = None) -> np.ndarray:
    """``n`` joint prior draws of the free variables, mapped to the flat unconstrained space.

    One vectorised PyTensor call (the roots of the prior graph are resized to
    ``n`` and the rest batched with ``vectorize_graph``), then each draw is
    pushed through its value transform's forward map. Returns an ``(n, dim)``
    float64 array in :func:`jax_model`'s ravel order: the usual way to start
    many chains spread over a multimodal posterior.
    """
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    free = list(model.free_RVs)
    transformed = []
    for rv in free:
        transform = model.rvs_to_transforms.get(rv)
        transformed.append(rv if transform is None else transform.forward(rv, *rv.owner.inputs))
    values = batched_prior_fn(model, transformed, n, seed=seed)()
    return np.concatenate(
        [
            np.broadcast_to(np.asarray(v, float), (n, *np.shape(v)[1:])).reshape(n, -1)
            for v in values
        ],
        axis=1,
    )


def to_datatree(
    jm: JaxModel,
    positions: jax.Array | np.ndarray,
    sample_stats: Mapping[str, Any] | None = None,
    *,
    attrs: Mapping[str, Any] | None = None,
    group: str = "posterior",
) -> DataTree:
    """An ArviZ ``DataTree`` from unconstrained draws of shape ``(chains, draws, dim)``.

    The ``posterior`` (or ``group``) holds the model's constrained free variables
    and deterministics with PyMC's names, dims and coords; ``sample_stats`` holds
    the given per-draw statistics (``(chains, draws)`` arrays named as ArviZ
    expects: ``lp``, ``acceptance_rate``, ``diverging``, ``step_size``,
    ``tree_depth``, ``n_steps``, ``energy``); ``observed_data`` and
    ``constant_data`` come from the model as in ``pm.sample``.
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 3 or positions.shape[-1] != jm.dim:
        raise ValueError(
            f"positions must have shape (chains, draws, {jm.dim}), got {tuple(positions.shape)}."
        )
    values = jax.jit(jax.vmap(jax.vmap(jm.constrained_fn)))(positions)
    groups: dict[str, Any] = {group: {k: np.asarray(v) for k, v in values.items()}}
    if sample_stats:
        groups["sample_stats"] = {k: np.asarray(v) for k, v in sample_stats.items()}
    if group == "posterior":
        observed = find_observations(jm.model)
        if observed:
            groups["observed_data"] = observed
        constants = find_constants(jm.model)
        if constants:
            groups["constant_data"] = constants
    coords, dims = coords_and_dims_for_inferencedata(jm.model)
    return from_dict(
        data=groups,
        coords=coords,
        dims=dims,
        sample_dims=["chain", "draw"],
        attrs={group: make_attrs(dict(attrs or {}), inference_library=None)},
    )
