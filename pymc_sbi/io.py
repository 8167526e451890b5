"""Save and load estimators: one ``.safetensors`` file, no pickle.

Tensors (network parameters and z-scoring statistics) go into a safetensors
file; everything else (estimator kind, network family and hyper-parameters,
parameter spec, training history and config) goes into its JSON header
metadata. Loading rebuilds the network from a registry of known families
(:func:`pymc_sbi.nn.network_from_config`), so no code stored in the file is
ever executed. safetensors (Hugging Face) is used because it is the standard
safe tensor container: a JSON header plus raw buffers, with no code path for
arbitrary objects.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.covariates import DataRange
from pymc_sbi.spec import ParamSpec
from pymc_sbi.standardize import Standardization

__all__ = ["load", "save"]

FORMAT = "pymc_sbi.estimator"
VERSION = "1"
# Version 2 adds ensembles (``members`` in the metadata, a leading member axis on
# every parameter tensor). Single estimators are still written as version 1, so
# older pymc_sbi releases read them; ensembles are written as version 2, so older
# releases refuse them instead of misreading the stacked parameters.
ENSEMBLE_VERSION = "2"
READABLE_VERSIONS = (VERSION, ENSEMBLE_VERSION)
_SEP = "/"


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if _SEP in key:
            raise ValueError(f"Parameter key {key!r} contains {_SEP!r}.")
        name = f"{prefix}{_SEP}{key}" if prefix else key
        if isinstance(value, dict) or hasattr(value, "items"):
            out.update(_flatten(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(_SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return tree


def save(estimator: Estimator, path: str | os.PathLike) -> None:
    """Write ``estimator`` to ``path`` (conventionally ``*.safetensors``)."""
    from safetensors.numpy import save_file

    from pymc_sbi.nn import network_config

    tensors = {f"params{_SEP}{k}": v for k, v in _flatten(estimator.params).items()}
    for field, value in estimator.standardization._asdict().items():
        tensors[f"standardization{_SEP}{field}"] = np.asarray(value)
    if estimator.data_range is not None:  # training range, for out-of-range warnings
        for field, value in estimator.data_range._asdict().items():
            tensors[f"data_range{_SEP}{field}"] = np.asarray(value)
    metadata = {
        "format": FORMAT,
        "version": VERSION if estimator.members is None else ENSEMBLE_VERSION,
        "kind": estimator.kind,
        "network": json.dumps(network_config(estimator.module)),
        "spec": json.dumps(estimator.spec.to_dict()),
        "x_shape": json.dumps(list(estimator.x_shape)),
        "history": json.dumps(dict(estimator.history), default=float),
        "config": json.dumps(dict(estimator.config), default=str),
    }
    if estimator.members is not None:
        metadata["members"] = str(estimator.members)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.fspath(path), metadata)


def load(path: str | os.PathLike) -> Estimator:
    """Read an estimator written by :func:`save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a valid safetensors file, or not a pymc_sbi estimator
        (foreign, corrupt or from an unsupported format version).
    """
    from safetensors import SafetensorError, safe_open

    from pymc_sbi.nn import network_from_config

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a safetensors file but not a pymc_sbi estimator "
            f"(format={metadata.get('format')!r})."
        )
    if metadata.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has estimator format version {metadata.get('version')!r}; this "
            f"pymc_sbi reads versions {', '.join(READABLE_VERSIONS)}."
        )
    try:
        params = _unflatten(
            {k.split(_SEP, 1)[1]: v for k, v in tensors.items() if k.startswith("params" + _SEP)}
        )
        std = Standardization(
            *(jnp.asarray(tensors[f"standardization{_SEP}{f}"]) for f in Standardization._fields)
        )
        module = network_from_config(json.loads(metadata["network"]))
        data_range = None
        if f"data_range{_SEP}x_min" in tensors:
            data_range = DataRange(
                *(np.asarray(tensors[f"data_range{_SEP}{f}"]) for f in DataRange._fields)
            )
        return Estimator(
            kind=metadata["kind"],
            module=module,
            params=params,
            standardization=std,
            spec=ParamSpec.from_dict(json.loads(metadata["spec"])),
            x_shape=tuple(json.loads(metadata["x_shape"])),
            history=json.loads(metadata.get("history", "{}")),
            config=json.loads(metadata.get("config", "{}")),
            data_range=data_range,
            members=int(metadata["members"]) if "members" in metadata else None,
        )
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is a corrupt pymc_sbi estimator file: {err!r}") from err
