"""Pickle-free (de)serialisation of network definitions.

A network is a Flax linen dataclass whose fields are JSON primitives, so its
definition is ``{"family": name, "config": {field: value}}``.  A saved
estimator stores this dict next to its parameters and rebuilds the module with
:func:`network_from_config`.  Other network families (classifiers, embedding
nets) join the registry through :func:`register_network`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from .classifier import MLPClassifier, ResidualClassifier
from .embedding import EmbeddedDensity, MLPEmbedding
from .maf import MAF
from .mdn import MDN
from .nsf import NSF

__all__ = ["NETWORKS", "network_config", "network_from_config", "register_network"]

NETWORKS: dict[str, type[nn.Module]] = {
    "maf": MAF,
    "nsf": NSF,
    "mdn": MDN,
    "mlp_classifier": MLPClassifier,
    "resnet_classifier": ResidualClassifier,
}

# Embedding nets and the density-with-embedding composite (module-valued fields
# are saved recursively as nested {"family", "config"} dicts).
NETWORKS["mlp_embedding"] = MLPEmbedding
NETWORKS["embedded_density"] = EmbeddedDensity

_EXCLUDED_FIELDS = frozenset({"parent", "name"})
_JSON_PRIMITIVES = (bool, int, float, str, type(None))


def register_network(family: str, cls: type[nn.Module]) -> None:
    """Register a network class under ``family`` (must not be taken by another class)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"{cls!r} is not a flax.linen.Module subclass")
    if NETWORKS.get(family, cls) is not cls:
        raise ValueError(f"network family {family!r} is already registered")
    NETWORKS[family] = cls


def _family_of(module: nn.Module) -> str:
    for family, cls in NETWORKS.items():
        if type(module) is cls:
            return family
    raise ValueError(
        f"{type(module).__name__} is not a registered network; known families: "
        f"{sorted(NETWORKS)} (add one with register_network)"
    )


def network_config(module: nn.Module) -> dict[str, Any]:
    """JSON-serialisable definition ``{"family": ..., "config": {...}}`` of ``module``.

    The config holds every dataclass field except Flax's ``parent`` and
    ``name``; a non-primitive field value raises ``TypeError``.
    """
    family = _family_of(module)
    config: dict[str, Any] = {}
    for field in dataclasses.fields(module):
        if field.name in _EXCLUDED_FIELDS:
            continue
        value = getattr(module, field.name)
        if isinstance(value, nn.Module):  # nested network: its own definition
            config[field.name] = network_config(value)
            continue
        if not isinstance(value, _JSON_PRIMITIVES):
            raise TypeError(
                f"field {field.name!r} of {type(module).__name__} is {type(value).__name__}, "
                "not a JSON primitive"
            )
        config[field.name] = value
    return {"family": family, "config": config}


def network_from_config(definition: dict[str, Any]) -> nn.Module:
    """Rebuild a module from :func:`network_config`'s output."""
    try:
        family, config = definition["family"], definition.get("config", {})
    except (KeyError, TypeError, AttributeError):
        raise ValueError(
            f"expected a dict with keys 'family' and 'config', got {definition!r}"
        ) from None
    if family not in NETWORKS:
        raise ValueError(f"unknown network family {family!r}; known families: {sorted(NETWORKS)}")
    cls = NETWORKS[family]
    allowed = {f.name for f in dataclasses.fields(cls)} - _EXCLUDED_FIELDS
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} for network family {family!r}")
    config = {  # nested network definitions (module-valued fields) are rebuilt first
        k: network_from_config(v) if isinstance(v, dict) and "family" in v else v
        for k, v in config.items()
    }
    return cls(**config)
