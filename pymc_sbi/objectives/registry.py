r"""What each estimator kind computes with its trained network: a registry.

An :class:`~pymc_sbi.Estimator` records its ``kind`` (``"nle"``, ``"mnle"``,
``"npe"``, ``"nre"``); the registry maps the kind to the pure functions that
evaluate and sample its network, so the estimator never switches on the kind
itself and a new kind is one :func:`register_kind` call away (as
:func:`pymc_sbi.nn.register_network` does for networks).

Every function takes the network (``module``), its parameters and the
z-scoring statistics (``std``) first, then flat arrays:

- ``log_prob(module, params, std, x, theta)``: :math:`\log q(x \mid \theta)`
  (likelihood), :math:`\log q(\theta \mid x)` (posterior) or
  :math:`\log r(x, \theta)` (ratio), shape ``(...,)``;
- ``sample(module, params, std, rng_key, condition)``: draws of ``x`` given
  ``theta`` (likelihood) or of ``theta`` given ``x`` (posterior); ``None``
  for ratios, which are sampled by MCMC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from pymc_sbi.objectives.mnle import mnle_log_prob, mnle_sample
from pymc_sbi.objectives.nle import nle_log_prob, nle_sample
from pymc_sbi.objectives.npe import npe_log_prob, npe_sample
from pymc_sbi.objectives.nre import nre_log_ratio

__all__ = ["KIND_REGISTRY", "KindFunctions", "get_kind", "register_kind"]

Role = Literal["likelihood", "posterior", "ratio"]


class KindFunctions(NamedTuple):
    """The pure functions of one estimator kind (see the module docstring)."""

    role: Role
    log_prob: Callable
    sample: Callable | None


KIND_REGISTRY: dict[str, KindFunctions] = {}


def register_kind(
    kind: str, *, role: Role, log_prob: Callable, sample: Callable | None = None
) -> None:
    """Register (or replace) the functions of estimator kind ``kind``."""
    if role not in ("likelihood", "posterior", "ratio"):
        raise ValueError(f"role must be 'likelihood', 'posterior' or 'ratio', got {role!r}.")
    if role != "ratio" and sample is None:
        raise ValueError(f"A {role} kind needs a sample function.")
    KIND_REGISTRY[kind] = KindFunctions(role=role, log_prob=log_prob, sample=sample)


def get_kind(kind: str) -> KindFunctions:
    """The registered functions of ``kind``; a ``ValueError`` naming the known kinds otherwise."""
    try:
        return KIND_REGISTRY[kind]
    except KeyError:
        raise ValueError(
            f"Unknown estimator kind {kind!r}; expected one of {tuple(KIND_REGISTRY)}."
        ) from None


register_kind("nle", role="likelihood", log_prob=nle_log_prob, sample=nle_sample)
register_kind("mnle", role="likelihood", log_prob=mnle_log_prob, sample=mnle_sample)
register_kind("npe", role="posterior", log_prob=npe_log_prob, sample=npe_sample)
register_kind("nre", role="ratio", log_prob=nre_log_ratio)
