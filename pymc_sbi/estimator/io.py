"""A container for named tensors and string metadata: one ``.safetensors`` file, no pickle.

This module knows nothing of estimators: it writes a flat mapping of named
arrays with a JSON header of strings, and reads it back, checking the header's
``format`` and ``version`` fields. :mod:`pymc_sbi.estimator.core` decides what
goes in. safetensors (Hugging Face) is used because it is the standard safe
tensor container: a JSON header plus raw buffers, with no code path that
could rebuild arbitrary objects, so loading a file never executes code.

Nested mappings of arrays are flattened to ``"a/b/c"`` keys (:func:`flatten`)
and rebuilt with :func:`unflatten`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SEP", "flatten", "read", "unflatten", "write"]

SEP = "/"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a": {"b": x}}`` -> ``{"a/b": np.asarray(x)}`` (keys must not contain ``/``)."""
    out = {}
    for key, value in tree.items():
        if SEP in key:
            raise ValueError(f"Key {key!r} contains {SEP!r}.")
        name = f"{prefix}{SEP}{key}" if prefix else key
        if isinstance(value, Mapping) or hasattr(value, "items"):
            out.update(flatten(value, name))
        else:
            out[name] = np.asarray(value)
    return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The inverse of :func:`flatten`: nested dicts of numpy arrays."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def write(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str],
    *,
    format: str,
    version: str,
) -> None:
    """Write ``tensors`` and string ``metadata`` (plus ``format``/``version``) to ``path``."""
    from safetensors.numpy import save_file

    header = {"format": format, "version": version, **metadata}
    bad = [k for k, v in header.items() if not isinstance(v, str)]
    if bad:
        raise TypeError(f"Metadata values must be strings; not so for {bad}.")
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(arrays, os.fspath(path), header)


def read(
    path: str | os.PathLike, *, format: str, versions: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a file written by :func:`write`: ``(tensors, metadata)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable safetensors file, its ``format`` is not
        ``format``, or its ``version`` is not one of ``versions``.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != format:
        raise ValueError(
            f"{path} is a safetensors file but not a {format} file "
            f"(format={metadata.get('format')!r})."
        )
    if metadata.get("version") not in versions:
        raise ValueError(
            f"{path} has {format} format version {metadata.get('version')!r}; this "
            f"pymc_sbi reads versions {', '.join(versions)}."
        )
    return tensors, metadata
