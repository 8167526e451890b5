"""Shared machinery of the PyMC terms (NeuralLikelihood, NeuralRatio).

A term is a ``pm.CustomDist`` over the observations whose ``logp`` is a JAX Op
(:mod:`pymc_sbi.terms.ops`) of the flat parameter vector ``theta`` -- assembled from
named model tensors by :func:`stack_params` -- and the observed value. The
event shape reaches PyMC through the signature ``"(d),(e...)->(e...)"`` with a
dummy ``(e...)`` parameter (PyMC cannot otherwise infer the support shape).

**Layouts.** Observations are ``(*batch, *x_shape)``; ``theta`` is
``(*theta_batch, d)``. Batch axes broadcast like NumPy, with one addition for
the grouped layout: when ``theta`` has *fewer* batch axes than the data (but
at least one), its axes are the *leading* ones -- ``x`` ``(groups, trials, e)``
with per-group parameters ``(groups,)`` means ``theta[:, None]``. The flat
(ragged) layout is ``x`` ``(n_trials, e)`` with parameters indexed per trial
(``mu[subject_idx]``). Either way the log density is one batched JAX call
over all trials (the network's leading axes), and so is its gradient.

**Covariates.** For likelihood estimators trained with per-trial covariates
(``estimator.n_covariates = c > 0``) the term takes a third input ``(*batch, c)``
(or ``(*batch,)`` when ``c == 1``), and the signature becomes
``"(d),(c),(e...)->(e...)"``.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.elemwise import DimShuffle
from pytensor.tensor.shape import SpecifyShape
from pytensor.tensor.subtensor import AdvancedSubtensor, Subtensor
from pytensor.tensor.type import TensorType

from pymc_sbi.estimator import Estimator
from pymc_sbi.prior import support_bounds
from pymc_sbi.terms.dedup import indexed_log_density, plan_contexts
from pymc_sbi.terms.ops import enable_x64_for_pytensor, jax_op
from pymc_sbi.terms.range_check import constant_value

__all__ = [
    "SupportWarning",
    "TermInfo",
    "align_batch",
    "estimator_term",
    "model_terms",
    "stack_params",
    "term_info",
]


class TermInfo(NamedTuple):
    """What a neural term was built from (for predictive checks and range warnings).

    ``theta`` and ``covariates`` are the PyTensor graphs (in terms of the
    model's random variables / data) that the term's log density receives.
    """

    estimator: Estimator
    theta: pt.TensorVariable
    covariates: pt.TensorVariable | None
    observed: Any


_TERMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {name: TermInfo}


def model_terms(model: pm.Model) -> dict[str, TermInfo]:
    """The pymc_sbi neural terms of ``model``: ``{name: TermInfo}`` (a copy; empty if none)."""
    return dict(_TERMS.get(model, {}))


def term_info(model: pm.Model, name: str) -> TermInfo:
    """The :class:`TermInfo` of the neural term ``name`` of ``model``."""
    terms = _TERMS.get(model, {})
    if name not in terms:
        raise KeyError(
            f"{name!r} is not a pymc_sbi neural term of this model; terms: {sorted(terms)}."
        )
    return terms[name]


class SupportWarning(UserWarning):
    """A model variable can take values outside the support the estimator was trained on."""


_INDEXING = (Subtensor, AdvancedSubtensor, DimShuffle, SpecifyShape)


def _base_free_rv(v, model: pm.Model | None):
    """The free random variable ``v`` indexes or reshapes (``mu[idx]``), or ``None``."""
    if model is None:
        return None
    free = set(model.free_RVs)
    while v not in free and v.owner is not None and isinstance(v.owner.op, _INDEXING):
        v = v.owner.inputs[0]
    return v if v in free else None


def check_support(estimator: Estimator, params: Mapping[str, Any], term: str) -> list[str]:
    """Warn for every parameter whose model support is wider than its training support.

    The training support is the prior's (``estimator.spec.lower``/``upper``);
    the model's is read off the variable's value transform (as for the prior).
    Outside the training support the network was never trained: its value
    there is an extrapolation (or ``-inf`` with ``truncate_to_training_support``).
    Returns the messages (one per variable).
    """
    try:
        model = pm.modelcontext(None)
    except TypeError:
        model = None
    spec, msgs = estimator.spec, []
    for name in spec.names:
        rv = _base_free_rv(pt.as_tensor_variable(params[name]), model)
        if rv is None:
            continue
        shape = tuple(int(s) for s in model.eval_rv_shapes()[rv.name])
        lo, hi = support_bounds(model, rv, shape)
        sl = spec.slices[name]
        t_lo, t_hi = np.min(spec.lower[sl]), np.max(spec.upper[sl])
        if np.min(lo) < t_lo or np.max(hi) > t_hi:
            msgs.append(
                f"Term {term!r}: {name!r} is the model variable {rv.name!r} with support "
                f"[{np.min(lo):g}, {np.max(hi):g}], but the estimator was trained on "
                f"[{t_lo:g}, {t_hi:g}]; outside it the network extrapolates. Pass "
                "truncate_to_training_support=True for -inf there, and check the posterior "
                "with ps.check_posterior_range."
            )
    for msg in msgs:
        warnings.warn(msg, SupportWarning, stacklevel=4)
    return msgs


def check_batch(estimator: Estimator, params: Mapping[str, Any], observed, term: str) -> None:
    """Refuse parameters whose batch axes cannot follow the observations' (naming the variable).

    With observations ``(*batch, *x_shape)``, a parameter of the estimator's
    shape ``s`` may be given as ``(*b, *s)`` with ``b`` equal to ``batch``, a
    leading part of it (per group), or broadcastable to it (1s); a batch the
    observations do not have is an error here rather than deep inside PyMC.
    """
    if observed is None:
        return
    k = len(estimator.x_shape)
    obs_shape = tuple(observed.type.shape) if hasattr(observed, "type") else np.shape(observed)
    batch = tuple(obs_shape[: len(obs_shape) - k])
    for name, shape in zip(estimator.spec.names, estimator.spec.shapes, strict=True):
        v = pt.as_tensor_variable(params[name])
        b = tuple(v.type.shape[: v.ndim - len(shape)])
        if not b:
            continue
        aligned = batch[: len(b)] if len(b) < len(batch) else batch
        ok = len(b) <= len(batch) and all(
            s is None or t is None or s in (1, t) for s, t in zip(b, aligned, strict=True)
        )
        if not ok:
            raise ValueError(
                f"Term {term!r}: parameter {name!r} has batch shape {b} (shape {v.type.shape}, "
                f"the estimator's {name!r} is {shape}), but the observations have batch shape "
                f"{batch} (observed {obs_shape}, x_shape {estimator.x_shape}). Give {name!r} one "
                f"value per observation {batch}, per leading group, or a single value."
            )


def _support_guard(estimator: Estimator, theta, out):
    """``out`` where ``theta`` lies in the training support, ``-inf`` elsewhere."""
    lo = np.asarray(estimator.spec.lower, float)
    hi = np.asarray(estimator.spec.upper, float)
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return out
    inside = pt.all(pt.and_(pt.ge(theta, lo), pt.le(theta, hi)), axis=-1)
    return pt.switch(inside, out, -np.inf)


def align_batch(v: pt.TensorVariable, batch_ndim: int, core_ndim: int = 1) -> pt.TensorVariable:
    """Insert axes after the batch axes of ``v`` so that they lead ``batch_ndim`` axes.

    ``v`` ``(*b, *core)`` with ``0 < len(b) < batch_ndim`` becomes
    ``(*b, 1, ..., 1, *core)``; otherwise it is returned unchanged.
    """
    nb = v.ndim - core_ndim
    if nb <= 0 or nb >= batch_ndim:
        return v
    return pt.expand_dims(v, axis=tuple(range(nb, batch_ndim)))


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
    batch = pt.broadcast_shape(
        *(tuple(p.shape[i] for i in range(p.ndim - 1)) for p in parts), arrays_are_shapes=True
    )
    parts = [pt.broadcast_to(p, (*batch, s)) for p, s in zip(parts, spec.sizes, strict=True)]
    return pt.concatenate(parts, axis=-1)


def _static_batch(*batches: tuple[int | None, ...]) -> tuple[int | None, ...]:
    """NumPy broadcasting of static batch shapes (``None`` = unknown)."""
    n = max(len(b) for b in batches)
    padded = [(1,) * (n - len(b)) + tuple(b) for b in batches]
    out = []
    for sizes in zip(*padded, strict=True):
        known = {s for s in sizes if s is not None and s != 1}
        if len(known) == 1:
            out.append(known.pop())
        elif any(s is None for s in sizes):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _logp_graph(estimator: Estimator, value, theta, fn, label: str, covariates=None):
    """Per-observation ``fn(x, theta[, covariates])`` (a JAX function) as a PyTensor graph."""
    enable_x64_for_pytensor()
    floatx = pytensor.config.floatX
    value = pt.as_tensor_variable(value).astype(floatx)
    k = len(estimator.x_shape)
    batches = [theta.type.shape[:-1], value.type.shape[: value.ndim - k]]
    inputs = [theta, value]
    if covariates is not None:
        batches.append(covariates.type.shape[:-1])
        inputs.append(covariates)
    out_type = TensorType(floatx, shape=_static_batch(*batches))
    name = f"{label}_{type(estimator.module).__name__.lower()}"
    if covariates is None:
        op = jax_op(lambda th, x: fn(x, th), [theta.type, value.type], out_type, name=name)
    else:
        op = jax_op(lambda th, x, s: fn(x, th, s), [i.type for i in inputs], out_type, name=name)
    return op(*inputs)


def prepare_covariates(estimator: Estimator, covariates, batch_ndim: int | None):
    """``covariates`` as a floatX tensor ``(*batch, c)``, or ``None``; clear errors otherwise."""
    c = estimator.n_covariates
    if covariates is None:
        if c:
            raise ValueError(
                f"The estimator was trained with {c} per-trial covariate(s); pass "
                f"covariates=<array of shape (n_trials, {c})"
                + (" or (n_trials,)" if c == 1 else "")
                + ">."
            )
        return None
    if not c:
        raise ValueError(
            "covariates were given but the estimator was trained without covariates "
            "(simulate(..., covariates=design) trains one with them)."
        )
    cov = pt.as_tensor_variable(covariates).astype(pytensor.config.floatX)
    if c == 1 and (cov.ndim == 0 or (batch_ndim is not None and cov.ndim == batch_ndim)):
        cov = cov[..., None]
    last = cov.type.shape[-1] if cov.ndim else None
    if cov.ndim == 0 or (last is not None and last != c):
        raise ValueError(
            f"covariates have shape {cov.type.shape}; the estimator was trained with {c} "
            f"covariate(s), so expected (..., {c})."
        )
    return pt.specify_shape(cov, (*([None] * (cov.ndim - 1)), c))


def check_observed(estimator: Estimator, observed, name: str = "observed") -> None:
    """Refuse observations of the wrong trailing shape, or with missing / non-finite values.

    PyMC turns NaN (or masked) observations into an imputed latent variable
    (``<name>_unobserved``) without a word; for a neural term that would sample
    data the network never saw as parameters of the posterior. A ``ValueError``
    names the term, the count and the first offending position instead.
    """
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
    if np.ma.isMaskedArray(observed) and np.ma.getmaskarray(observed).any():
        raise ValueError(
            f"Term {name!r}: observed is a masked array with "
            f"{int(np.ma.getmaskarray(observed).sum())} masked values; PyMC would impute them "
            "as latent variables. Drop the incomplete trials before building the term."
        )
    value = constant_value(observed)
    if value is not None and not np.all(np.isfinite(value)):
        bad = ~np.isfinite(value)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Term {name!r}: observed has {int(bad.sum())} non-finite values (NaN or inf; the "
            f"first at index {first}). PyMC would silently impute NaN observations as latent "
            "variables; drop the incomplete trials (or simulate them) before building the term."
        )


def _context_plan(estimator: Estimator, observed, theta, covariates, batch_ndim: int):
    """The :class:`~pymc_sbi.terms.dedup.ContextPlan` of a term, or ``None``.

    See :mod:`pymc_sbi.terms.dedup`.

    Needs constant observations and covariates (``pm.Data`` can change after
    the term is built, so it is evaluated per trial).
    """
    if hasattr(observed, "get_value") or hasattr(covariates, "get_value"):
        return None
    obs = constant_value(observed)
    if obs is None:
        return None
    cov = None
    if covariates is not None:
        cov = constant_value(covariates)
        if cov is None:
            return None
        c = estimator.n_covariates
        if c == 1 and (cov.ndim == 0 or cov.ndim == batch_ndim):
            cov = cov[..., None]
        nb = cov.ndim - 1
        if 0 < nb < batch_ndim:
            cov = np.expand_dims(cov, tuple(range(nb, batch_ndim)))
    batch_shape = tuple(obs.shape[:batch_ndim])
    return plan_contexts(estimator, batch_shape, tuple(theta.type.shape[:-1]), cov)


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
    covariates=None,
    dims=None,
    deduplicate: bool = False,
    truncate_support: bool = False,
    **kwargs,
) -> pt.TensorVariable:
    """Build the ``pm.CustomDist`` of a neural term.

    ``log_density(x, theta)`` (or ``log_density(x, theta, covariates)`` when the
    estimator has covariates) is a JAX function giving one value per observation;
    ``random(theta, rng, size)`` (``random(theta, rng, size, covariates=...)``)
    draws observations with NumPy outputs; ``correction(theta)``, if given, is a
    PyTensor graph added to every observation's value (e.g. ``-log p_train(theta)``
    for an NPE term). Layouts and covariates: see the module docstring. With
    ``deduplicate``, a likelihood estimator whose network allows it is evaluated
    once per distinct ``(parameter group, covariates)`` context
    (:mod:`pymc_sbi.terms.dedup`) when the layout and constant covariates make that pay.
    With ``truncate_support`` the term is ``-inf`` outside the training support.
    """
    theta = stack_params(estimator, params)
    check_support(estimator, params, name)
    check_observed(estimator, observed, name)
    check_batch(estimator, params, observed, name)
    k = len(estimator.x_shape)
    batch_ndim = None
    if observed is not None:
        batch_ndim = (
            len(np.shape(observed) if not hasattr(observed, "type") else observed.type.shape) - k
        )
        theta = align_batch(theta, batch_ndim)
    cov = prepare_covariates(estimator, covariates, batch_ndim)
    if cov is not None and batch_ndim is not None:
        cov = align_batch(cov, batch_ndim)
    if deduplicate and batch_ndim:
        plan = _context_plan(estimator, observed, theta, covariates, batch_ndim)
        if plan is not None:
            indexed = indexed_log_density(estimator, plan)

            def log_density(x, theta, covariates=None, _f=indexed):
                return _f(x, theta)  # covariates are baked into the plan

    dummy = np.zeros(estimator.x_shape)  # carries the event shape for the signature
    core = ",".join(f"e{i}" for i in range(k))

    if cov is None:

        def logp(value, theta, _dummy):
            out = _logp_graph(estimator, value, theta, log_density, label)
            out = out if correction is None else out + correction(theta)
            return _support_guard(estimator, theta, out) if truncate_support else out

        def _random(theta, _dummy, rng=None, size=None):
            return random(np.asarray(theta), rng, size)

        dist_params, signature = (theta, dummy), f"(d),({core})->({core})"
    else:

        def logp(value, theta, cov, _dummy):
            out = _logp_graph(estimator, value, theta, log_density, label, covariates=cov)
            out = out if correction is None else out + correction(theta)
            return _support_guard(estimator, theta, out) if truncate_support else out

        def _random(theta, cov, _dummy, rng=None, size=None):
            return random(np.asarray(theta), rng, size, covariates=np.asarray(cov))

        dist_params, signature = (theta, cov, dummy), f"(d),(c),({core})->({core})"

    rv = pm.CustomDist(
        name,
        *dist_params,
        logp=logp,
        random=_random,
        signature=signature,
        observed=observed,
        dims=dims,
        **kwargs,
    )
    model = pm.modelcontext(None)
    _TERMS.setdefault(model, {})[name] = TermInfo(estimator, theta, cov, observed)
    return rv
