"""Read the parameter vector off a PyMC prior model and draw from it.

The prior of a simulation-based inference problem is an ordinary ``pm.Model``:
its free random variables are the simulator's parameters. This module builds
the :class:`~pymc_sbi.spec.ParamSpec` of such a model and draws ``n`` prior
samples with **one** compiled, vectorised PyTensor function (not a Python loop
over ``pm.draw``): every root random variable is resized to a leading batch of
``n`` and :func:`pytensor.graph.replace.vectorize_graph` batches the rest of the
graph (hierarchies included) over it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.distributions.shape_utils import change_dist_size
from pymc.logprob.basic import conditional_logp
from pymc.pytensorf import compile as compile_pymc
from pymc.sampling.jax import get_jaxified_graph
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.replace import graph_replace, vectorize_graph
from pytensor.graph.traversal import ancestors
from pytensor.tensor.random.op import RandomVariable
from pytensor.tensor.random.type import RandomType
from pytensor.tensor.type import discrete_dtypes

from pymc_sbi.spec import ParamSpec

__all__ = [
    "batched_prior_fn",
    "draw_prior",
    "param_spec",
    "prior_draw_fn",
    "prior_initvals",
    "prior_log_density",
    "prior_log_prob_fn",
    "support_bounds",
]


def _select_rvs(model: pm.Model, names: Sequence[str] | None) -> list:
    free = list(model.free_RVs)
    by_name = {rv.name: rv for rv in free}
    if names is None:
        selected = free
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(
                f"Unknown parameter name(s) {unknown}: the model's free random variables "
                f"are {list(by_name)}."
            )
        selected = [by_name[n] for n in names]
    if not selected:
        raise ValueError("The prior model has no free random variables.")
    for rv in selected:
        if rv.type.dtype in discrete_dtypes:
            raise ValueError(
                f"Free variable {rv.name!r} is discrete ({rv.type.dtype}); neural estimators "
                "need continuous parameters. Marginalise it, or make it observed data."
            )
    return selected


def support_bounds(model: pm.Model, rv, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise support bounds, read off the default value transform.

    The transform maps the support onto the real line, so its backward map at
    very negative / very positive values gives the lower / upper bound
    (``exp(-inf) = 0`` for a log transform, ``a`` and ``b`` for an interval).
    Transforms that couple elements (ordered, simplex) or whose bounds depend on
    other random variables give ``(-inf, inf)``.
    """
    size = math.prod(shape)
    unbounded = np.full(size, -np.inf), np.full(size, np.inf)
    transform = model.rvs_to_transforms.get(rv)
    if transform is None:
        return unbounded
    value = model.rvs_to_values[rv]
    try:
        value_shape = tuple(model.eval_rv_shapes()[value.name])
        ends = []
        for fill in (-1e4, 1e4):
            v = np.full(value_shape, fill, dtype=value.type.dtype)
            end = transform.backward(v, *rv.owner.inputs)
            if any(
                a.owner is not None and isinstance(a.owner.op, RandomVariable)
                for a in ancestors([end])
            ):  # the bound depends on another random variable: no fixed bound
                return unbounded
            ends.append(np.asarray(end.eval(), float))
        lo, hi = (np.broadcast_to(e, shape).reshape(size) for e in ends)
    except Exception:  # dependent bounds or coupled transforms
        return unbounded
    if not (np.all(lo <= hi) and np.all(~np.isnan(lo)) and np.all(~np.isnan(hi))):
        return unbounded
    return lo.astype(float), hi.astype(float)


def param_spec(model: pm.Model, names: Sequence[str] | None = None) -> ParamSpec:
    """Build the :class:`ParamSpec` of a model's free random variables.

    Parameters
    ----------
    model
        The prior model.
    names
        Which free variables make up ``theta`` (default: all, in the model's order).

    Raises
    ------
    ValueError
        For an unknown name or a discrete free variable.
    """
    rvs = _select_rvs(model, names)
    shapes_all = model.eval_rv_shapes()
    shapes, lowers, uppers, dims = [], [], [], []
    for rv in rvs:
        shape = tuple(int(s) for s in shapes_all[rv.name])
        lo, hi = support_bounds(model, rv, shape)
        shapes.append(shape)
        lowers.append(lo)
        uppers.append(hi)
        d = model.named_vars_to_dims.get(rv.name)
        dims.append(tuple(d) if d else None)
    used = {d for ds in dims if ds for d in ds}
    coords = tuple((k, tuple(v)) for k, v in model.coords.items() if k in used and v is not None)
    return ParamSpec(
        names=tuple(rv.name for rv in rvs),
        shapes=tuple(shapes),
        lower=tuple(np.concatenate(lowers).tolist()),
        upper=tuple(np.concatenate(uppers).tolist()),
        dims=tuple(dims),
        coords=coords,
    )


def batched_prior_fn(model: pm.Model, outputs: Sequence, n: int, seed=None):
    """Compile ``outputs`` (graphs of the model's free variables) over ``n`` joint prior draws.

    The roots of the prior graph are resized to a leading batch of ``n`` and
    :func:`~pytensor.graph.replace.vectorize_graph` batches the rest (hierarchies
    included), so one call gives ``n`` draws of every output. The function draws
    from fresh generators: reseeding never touches the model's (or another draw
    function's) RNGs.
    """
    free = list(model.free_RVs)
    free_set = set(free)
    roots = [rv for rv in free if not (set(ancestors([rv])) - {rv}) & free_set]
    replace = {rv: change_dist_size(rv, (n,), expand=True) for rv in roots}
    batched = vectorize_graph(list(outputs), replace=replace)
    rngs = [
        v
        for v in ancestors(batched)
        if isinstance(v, SharedVariable) and isinstance(v.type, RandomType)
    ]
    batched = graph_replace(
        batched, {r: pytensor.shared(np.random.default_rng()) for r in rngs}, strict=False
    )
    return compile_pymc([], batched, random_seed=seed)


def prior_draw_fn(model: pm.Model, n: int, names: Sequence[str] | None = None, seed=None):
    """Compile a function that returns ``n`` joint prior draws per call.

    Returns a callable ``() -> theta`` with ``theta`` of shape ``(n, d)`` in the
    order of :func:`param_spec`. Successive calls give fresh draws; the stream
    is fixed by ``seed``.
    """
    selected = _select_rvs(model, names)
    fn = batched_prior_fn(model, selected, n, seed=seed)

    def draw() -> np.ndarray:
        values = fn()
        return np.concatenate([np.asarray(v, dtype=float).reshape(n, -1) for v in values], axis=1)

    return draw


def draw_prior(
    model: pm.Model, n: int, seed: int | None = None, names: Sequence[str] | None = None
) -> np.ndarray:
    """Draw ``theta`` of shape ``(n, d)`` from the model's prior in one vectorised call.

    Parameters
    ----------
    model
        The prior model.
    n
        Number of joint draws.
    seed
        Integer seed; the same seed gives the same draws.
    names
        Subset of free variables (default: all).
    """
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    return prior_draw_fn(model, int(n), names=names, seed=seed)()


def prior_initvals(
    model: pm.Model, chains: int, seed: int | None = None, names: Sequence[str] | None = None
) -> list[dict[str, np.ndarray]]:
    """One prior draw per chain, as ``pm.sample(initvals=...)`` takes them.

    Starting many chains from independent prior draws spreads them over the
    prior's support, which matters for multimodal posteriors (two_moons): chains
    started near one another all fall into the same mode.
    """
    spec = param_spec(model, names)
    theta = draw_prior(model, chains, seed=seed, names=names)
    values = spec.unflatten(theta)
    return [{k: v[c] for k, v in values.items()} for c in range(chains)]


def prior_log_density(prior: pm.Model, spec: ParamSpec, theta) -> pt.TensorVariable:
    """``log p_0(theta)`` of the training prior, as a PyTensor graph of flat ``theta`` ``(d,)``.

    The prior's free variables must be the spec's parameters (same names and
    shapes); the joint log density includes hierarchical dependencies. The one
    builder of the prior density: :func:`prior_log_prob_fn` compiles it, the
    :func:`~pymc_sbi.NeuralPosterior` term subtracts it.
    """
    spec.check_matches(param_spec(prior), "the prior model")
    rvs = {rv.name: rv for rv in prior.free_RVs}
    values = {rv: rv.type() for rv in prior.free_RVs}
    logps = conditional_logp(values)
    total = pt.sum([pt.sum(lp) for lp in logps.values()])
    replace = {}
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        rv = rvs[name]
        if tuple(prior.eval_rv_shapes()[name]) != tuple(shape):
            raise ValueError(f"Prior variable {name!r} has a different shape than in training.")
        piece = theta[..., spec.slices[name]].reshape(shape)
        replace[values[rv]] = piece.astype(values[rv].dtype)
    return graph_replace(total, replace, strict=False)


def prior_log_prob_fn(prior, spec: ParamSpec) -> Callable[[np.ndarray], np.ndarray]:
    """``theta (n, d) -> log p(theta) (n,)`` for a PyMC prior, compiled to JAX once.

    The joint log density of the model's free variables (hierarchies included,
    :func:`prior_log_density`), ``-inf`` outside the
    support.
    """
    theta = pt.vector("theta", shape=(spec.dim,), dtype="float64")
    logp = prior_log_density(prior, spec, theta)
    fn = get_jaxified_graph(inputs=[theta], outputs=[logp])
    batched = jax.jit(jax.vmap(lambda t: jnp.reshape(fn(t)[0], ())))

    def log_prob(theta_batch) -> np.ndarray:
        return np.asarray(batched(jnp.asarray(theta_batch)), np.float64)

    return log_prob
