"""Shared machinery of the PyMC terms (NeuralLikelihood, NeuralRatio).

A term is a ``pm.CustomDist`` over the observations whose ``logp`` is a JAX Op
(:mod:`pymc_sbi.ops`) of the flat parameter vector ``theta`` -- assembled from
named model tensors by :func:`stack_params` -- and the observed value. The
event shape reaches PyMC through the signature ``"(d),(e...)->(e...)"`` with a
dummy ``(e...)`` parameter (PyMC cannot otherwise infer the support shape).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.type import TensorType

from pymc_sbi.estimator import Estimator
from pymc_sbi.ops import enable_x64_for_pytensor, jax_op

__all__ = ["estimator_term", "stack_params"]


def stack_params(estimator: Estimator, params: Mapping[str, Any]) -> pt.TensorVariable:
    """Assemble the flat ``theta`` ``(..., d)`` tensor from named model variables.

    Each ``params[name]`` must have trailing shape equal to the estimator's shape
    for ``name``; leading axes (per trial / per group) broadcast.

    Raises
    ------
    ValueError
        Naming a missing or unknown parameter, or one with the wrong shape.
    """
    spec = estimator.spec
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict name -> tensor, got {type(params).__name__}.")
    spec.check_names(params)
    parts = []
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        v = pt.as_tensor_variable(params[name]).astype(pytensor.config.floatX)
        k = len(shape)
        static = v.type.shape[v.ndim - k :] if v.ndim >= k else ()
        if v.ndim < k or any(s is not None and s != e for s, e in zip(static, shape, strict=True)):
            raise ValueError(
                f"Parameter {name!r} has shape {v.type.shape}; the estimator was trained with "
                f"{name!r} of shape {shape}, so expected (..., {', '.join(map(str, shape))})."
            )
        v = pt.specify_shape(v, (*([None] * (v.ndim - k)), *shape))
        parts.append(v.reshape((*v.shape[: v.ndim - k], math.prod(shape)), ndim=v.ndim - k + 1))
    if all(p.ndim == 1 for p in parts):
        return pt.specify_shape(pt.concatenate(parts, axis=-1), (spec.dim,))
    batch = pt.broadcast_shape(*(p.shape[:-1] for p in parts), arrays_are_shapes=True)
    parts = [pt.broadcast_to(p, (*batch, s)) for p, s in zip(parts, spec.sizes, strict=True)]
    return pt.concatenate(parts, axis=-1)


def _static_batch(theta, x, x_ndim: int) -> tuple[int | None, ...]:
    tb, xb = theta.type.shape[:-1], x.type.shape[: x.ndim - x_ndim]
    n = max(len(tb), len(xb))
    tb = (1,) * (n - len(tb)) + tuple(tb)
    xb = (1,) * (n - len(xb)) + tuple(xb)
    out = []
    for a, b in zip(tb, xb, strict=True):
        if a is None or b is None:
            out.append(None if (a != 1 and b != 1) else (b if a == 1 else a))
        else:
            out.append(max(a, b))
    return tuple(out)


def _logp_graph(estimator: Estimator, value, theta, fn, label: str):
    """Per-observation ``fn(x, theta)`` (a JAX function) as a PyTensor graph."""
    enable_x64_for_pytensor()
    floatx = pytensor.config.floatX
    value = pt.as_tensor_variable(value).astype(floatx)
    k = len(estimator.x_shape)
    out_type = TensorType(floatx, shape=_static_batch(theta, value, k))
    op = jax_op(
        lambda th, x: fn(x, th),
        [theta.type, value.type],
        out_type,
        name=f"{label}_{type(estimator.module).__name__.lower()}",
    )
    return op(theta, value)


def check_observed(estimator: Estimator, observed) -> None:
    """Raise a ``ValueError`` naming the expected shape if ``observed`` does not end in x_shape."""
    if observed is None:
        return
    k = len(estimator.x_shape)
    obs_shape = np.shape(observed) if not hasattr(observed, "type") else observed.type.shape
    trailing = tuple(obs_shape[len(obs_shape) - k :]) if len(obs_shape) >= k else None
    if trailing is None or any(
        s is not None and s != e for s, e in zip(trailing, estimator.x_shape, strict=True)
    ):
        raise ValueError(
            f"observed has shape {tuple(obs_shape)}; the estimator was trained on x of "
            f"shape {estimator.x_shape}, so expected (n_trials, "
            f"{', '.join(map(str, estimator.x_shape))}) or {estimator.x_shape}."
        )


def estimator_term(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed,
    *,
    log_density,
    random,
    label: str,
    correction=None,
    dims=None,
    **kwargs,
) -> pt.TensorVariable:
    """Build the ``pm.CustomDist`` of a neural term.

    ``log_density(x, theta)`` is a JAX function giving one value per observation;
    ``random(theta, rng, size)`` draws observations with NumPy outputs;
    ``correction(theta)``, if given, is a PyTensor graph added to every
    observation's value (e.g. ``-log p_train(theta)`` for an NPE term).
    """
    theta = stack_params(estimator, params)
    check_observed(estimator, observed)
    k = len(estimator.x_shape)
    dummy = np.zeros(estimator.x_shape)  # carries the event shape for the signature
    core = ",".join(f"e{i}" for i in range(k))

    def logp(value, theta, _dummy):
        out = _logp_graph(estimator, value, theta, log_density, label)
        return out if correction is None else out + correction(theta)

    def _random(theta, _dummy, rng=None, size=None):
        return random(np.asarray(theta), rng, size)

    return pm.CustomDist(
        name,
        theta,
        dummy,
        logp=logp,
        random=_random,
        signature=f"(d),({core})->({core})",
        observed=observed,
        dims=dims,
        **kwargs,
    )
