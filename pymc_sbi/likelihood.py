r"""A trained neural likelihood as an observed term of a ``pm.Model``.

``NeuralLikelihood("x", estimator, params={"mu": mu, "sigma": sigma}, observed=x_obs)``
adds the surrogate log-likelihood

.. math:: \sum_{n} \log q(x_n \mid \theta), \qquad
          \theta = \mathrm{concat}(\mathrm{ravel}(\mu), \mathrm{ravel}(\sigma), \dots)

to the model, where ``x_obs`` has shape ``(..., *x_shape)`` -- any leading axes
are i.i.d. trials, each contributing one term (so pointwise log-likelihoods
for LOO/WAIC are per trial). It is a ``pm.CustomDist`` whose ``logp`` is a
JAX Op (:mod:`pymc_sbi.ops`, differentiable, with JAX dispatch) and whose
``random`` draws from the surrogate, so ``pm.sample`` (pymc, nutpie, numpyro
NUTS; Slice; SMC), ``pm.fit``, ``pm.sample_prior_predictive`` and
``pm.sample_posterior_predictive`` all work on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.type import TensorType

from pymc_sbi.estimator import Estimator
from pymc_sbi.ops import enable_x64_for_pytensor, jax_op

__all__ = ["NeuralLikelihood", "stack_params"]


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


def _logp_graph(estimator: Estimator, value, theta):
    """Per-observation surrogate log-likelihood as a PyTensor graph."""
    enable_x64_for_pytensor()
    floatx = pytensor.config.floatX
    value = pt.as_tensor_variable(value).astype(floatx)
    k = len(estimator.x_shape)
    out_type = TensorType(floatx, shape=_static_batch(theta, value, k))
    op = jax_op(
        lambda th, x: estimator.log_prob(x, th),
        [theta.type, value.type],
        out_type,
        name=f"nle_logp_{type(estimator.module).__name__.lower()}",
    )
    return op(theta, value)


def NeuralLikelihood(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed=None,
    *,
    dims=None,
    **kwargs,
) -> pt.TensorVariable:
    r"""Add a neural likelihood term to the current ``pm.Model``.

    Parameters
    ----------
    name
        Name of the observed variable.
    estimator
        A trained NLE :class:`~pymc_sbi.Estimator` (``kind="nle"``).
    params
        ``{name: tensor}`` for every parameter the estimator was trained on
        (``estimator.spec.names``), each of trailing shape ``spec`` shape;
        typically the model's random variables, or expressions of them.
    observed
        Observations of shape ``(..., *estimator.x_shape)``; leading axes are
        i.i.d. trials whose log-likelihoods are summed. ``None`` makes the term
        a latent variable drawn from the surrogate.
    dims
        PyMC dims of the variable (trial axes first, then the data axes).
    **kwargs
        Passed to ``pm.CustomDist`` (e.g. ``shape``).

    Returns
    -------
    TensorVariable
        The observed random variable.

    Notes
    -----
    The log-density is :math:`\sum_n \log q(x_n \mid \theta)`; gradients with
    respect to every parameter come from JAX. Sampling with PyMC's own NUTS on
    several cores needs ``mp_ctx="forkserver"`` (see :mod:`pymc_sbi.ops`).
    """
    if estimator.kind != "nle":
        raise ValueError(f"NeuralLikelihood needs an NLE estimator, got kind={estimator.kind!r}.")
    theta = stack_params(estimator, params)
    k = len(estimator.x_shape)
    if observed is not None:
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
    dummy = np.zeros(estimator.x_shape)  # carries the event shape for the signature
    core = ",".join(f"e{i}" for i in range(k))
    signature = f"(d),({core})->({core})"
    sample = jax.jit(estimator.sample)

    def logp(value, theta, _dummy):
        return _logp_graph(estimator, value, theta)

    def random(theta, _dummy, rng=None, size=None):
        theta = np.asarray(theta)
        batch = tuple(size) if size is not None else theta.shape[:-1]
        theta = np.broadcast_to(theta, (*batch, theta.shape[-1]))
        seed = (rng if rng is not None else np.random.default_rng()).integers(2**31)
        return np.asarray(sample(jax.random.key(int(seed)), theta), dtype=np.float64)

    return pm.CustomDist(
        name,
        theta,
        dummy,
        logp=logp,
        random=random,
        signature=signature,
        observed=observed,
        dims=dims,
        **kwargs,
    )
