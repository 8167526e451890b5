"""One way to turn a user's ``seed`` into randomness: an int or a JAX key.

One-shot functions take ``seed`` (an ``int`` or a JAX PRNG key); primitives
take ``rng_key``. :func:`as_key` is the one conversion, so every entry point
accepts the same things and rejects the same mistakes with the same message.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

__all__ = ["as_key", "as_seed_int"]


def _is_key(seed) -> bool:
    if not isinstance(seed, jax.Array | np.ndarray):
        return False
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed.shape == ()
    return seed.shape == (2,) and seed.dtype == np.uint32  # a raw (legacy) key


def as_key(seed, name: str = "seed") -> jax.Array:
    """``jax.random.key(seed)`` for an int, the key itself for a JAX key.

    Raises
    ------
    TypeError
        For anything else (a float, a string, an array of several keys),
        naming the argument ``name``.
    """
    if _is_key(seed):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if not 0 <= int(seed) < 2**63:
            raise ValueError(f"{name} must be a non-negative integer below 2**63, got {seed}.")
        return jax.random.key(int(seed))
    raise TypeError(
        f"{name} must be an int or a JAX PRNG key (jax.random.key(...)), got "
        f"{type(seed).__name__} {seed!r}."
    )


def as_seed_int(seed, name: str = "seed") -> int:
    """A non-negative int from an int or a JAX key (for NumPy generators and records)."""
    if _is_key(seed):
        data = (
            jax.random.key_data(seed)
            if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
            else seed
        )
        return int(np.asarray(data, np.uint64).ravel()[-1])
    as_key(seed, name)  # validates
    return int(seed)
