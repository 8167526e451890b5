r"""Per-trial covariates as extra conditioning inputs, and the range of the training data.

A likelihood estimator for data that depend on known experimental conditions
(stimulus strength, condition codes, ...) models :math:`q(x \mid \theta, s)`:
the covariates :math:`s` join :math:`\theta` as conditioning inputs. Batches
then carry a third key, ``{"theta": (B, d), "x": (B, ...), "covariates": (B, c)}``
(what :meth:`pymc_sbi.Simulations.as_batch` returns for simulations over a
design of covariates). :func:`with_covariates` wraps any likelihood objective
so that it trains on the *context* :math:`(\theta, s)` -- concatenated, so
the z-scoring statistics of the estimator cover both and the estimator learns
how many covariates it has (``context_dim - d``).

The wrapped ``init`` also records the per-dimension minimum and maximum of the
training context and data (:class:`DataRange`), which the out-of-range
warnings of :mod:`pymc_sbi.terms.range_check` compare against.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from pymc_sbi.objectives.base import Objective, TrainState

__all__ = ["DataRange", "RangedTrainState", "data_range", "merge_covariates", "with_covariates"]


class DataRange(NamedTuple):
    """Per-dimension min/max of the training context ``(theta, covariates)`` and flat ``x``."""

    context_min: jnp.ndarray
    context_max: jnp.ndarray
    x_min: jnp.ndarray
    x_max: jnp.ndarray


@struct.dataclass
class RangedTrainState(TrainState):
    """A :class:`~pymc_sbi.objectives.TrainState` that also carries the :class:`DataRange`."""

    data_range: DataRange | None = None


def merge_covariates(batch):
    """``{"theta": concat(theta, covariates), "x": x}``; without covariates, ``batch`` itself."""
    if "covariates" not in batch:
        return batch
    theta = jnp.asarray(batch["theta"])
    cov = jnp.asarray(batch["covariates"])
    cov = jnp.reshape(cov, (cov.shape[0], -1)).astype(theta.dtype)
    return {"theta": jnp.concatenate([theta, cov], axis=-1), "x": batch["x"]}


def data_range(batch) -> DataRange:
    """Per-dimension min/max of a (merged) training batch, in float64 NumPy."""
    theta = np.asarray(batch["theta"], dtype=np.float64)
    x = np.asarray(batch["x"], dtype=np.float64).reshape(theta.shape[0], -1)
    return DataRange(theta.min(0), theta.max(0), x.min(0), x.max(0))


def with_covariates(objective: Objective) -> Objective:
    """Make a likelihood objective condition on ``batch["covariates"]`` when present.

    Parameters
    ----------
    objective
        An objective over ``{"theta", "x"}`` batches whose network conditions on
        ``theta`` (NLE, MNLE).

    Returns
    -------
    Objective
        Same ``kind`` and network; batches with a ``"covariates"`` key ``(B, c)``
        are trained with context ``(theta, covariates)`` ``(B, d + c)``; the
        initial state is a :class:`RangedTrainState`.
    """

    def init(rng_key, batch, optimizer) -> RangedTrainState:
        merged = merge_covariates(batch)
        state = objective.init(rng_key, merged, optimizer)
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        fields.pop("data_range", None)
        return RangedTrainState(
            **fields, data_range=DataRange(*map(jnp.asarray, data_range(merged)))
        )

    def step(rng_key, state, batch):
        return objective.step(rng_key, state, merge_covariates(batch))

    def evaluate(rng_key, state, batch):
        return objective.evaluate(rng_key, state, merge_covariates(batch))

    return objective._replace(init=init, step=step, evaluate=evaluate)
