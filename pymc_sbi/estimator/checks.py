"""What a saved estimator file must agree with: its network's parameter shapes, and who wrote it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.estimator import io
from pymc_sbi.objectives.registry import get_kind
from pymc_sbi.objectives.standardize import Standardization

__all__ = ["check_params", "library_versions"]


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose code defines a saved estimator's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pymc-sbi", "jax", "flax"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # e.g. an uninstalled checkout
            out[name] = "unknown"
    return out


def _expected_shapes(kind: str, module, std: Standardization) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` of the parameters ``module`` creates, without computing them.

    The network is initialised abstractly (``jax.eval_shape``) on example inputs
    of the widths recorded in the z-scoring statistics: ``(x, context)`` for a
    likelihood, ``(theta, x)`` for a posterior or a ratio.
    """
    x = jnp.zeros((1, int(std.x_mean.shape[-1])), jnp.float32)
    theta = jnp.zeros((1, int(std.theta_mean.shape[-1])), jnp.float32)
    args = (x, theta) if get_kind(kind).role == "likelihood" else (theta, x)
    return _leaf_shapes(jax.eval_shape(module.init, jax.random.key(0), *args))


def _leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{"a/b": shape}`` of every leaf of a nested dict (arrays or shape structs)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {
        io.SEP.join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf))
        for path, leaf in leaves
    }


def check_params(path, kind, module, std, params, members) -> None:
    """Every stored tensor present, expected and of the network's shape, or a ValueError."""
    expected = _expected_shapes(kind, module, std)
    stored = _leaf_shapes(params)
    lead = () if members is None else (int(members),)
    missing = sorted(set(expected) - set(stored))
    unused = sorted(set(stored) - set(expected))
    wrong = [
        f"params/{k}: file {stored[k]}, network {lead + expected[k]}"
        for k in sorted(set(expected) & set(stored))
        if stored[k] != lead + expected[k]
    ]
    if missing or unused or wrong:
        lines = [f"{path}: the stored tensors do not match the network its metadata describes"]
        lines += [f"  missing: params/{k} {lead + expected[k]}" for k in missing]
        lines += [f"  unused: params/{k} {stored[k]}" for k in unused]
        lines += [f"  shape: {w}" for w in wrong]
        raise ValueError("\n".join(lines))
