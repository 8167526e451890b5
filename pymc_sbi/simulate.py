"""Simulate from a PyMC prior: the training data of every neural estimator.

``simulate(model, simulator, n, seed)`` draws ``theta ~ p(theta)`` from the
model's prior (:mod:`pymc_sbi.prior`), runs the simulator on every draw and
returns a :class:`Simulations` record that keeps the parameter names.

Two kinds of simulator are accepted:

``backend="jax"`` (default)
    A pure JAX function ``simulator(rng_key, theta) -> x`` for **one** flat
    parameter vector ``theta`` of shape ``(d,)``. It is ``vmap``-ed and
    ``jit``-ed once and run in batches of ``batch_size`` (the last batch is
    padded, so there is one compilation). Simulation ``i`` uses the key
    ``jax.random.split(key, n)[i]``, so results do not depend on ``batch_size``.
``backend="numpy"``
    A Python function ``simulator(rng, theta) -> x`` over a **batch**:
    ``rng`` is a ``numpy.random.Generator`` and ``theta`` has shape ``(B, d)``;
    it returns ``x`` of shape ``(B, ...)``.

Simulations with any non-finite output are dropped and counted (a warning
says how many); if every simulation is invalid a ``ValueError`` is raised.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from tqdm.auto import tqdm

from pymc_sbi.prior import draw_prior, param_spec
from pymc_sbi.spec import ParamSpec

__all__ = ["Simulations", "run_simulator", "simulate"]


@dataclass(frozen=True)
class Simulations:
    """Parameter/data pairs with the names of the parameters.

    Attributes
    ----------
    theta
        ``(n, d)`` parameters, flattened in the order of ``spec``.
    x
        ``(n, *x_shape)`` simulated data.
    spec
        The :class:`ParamSpec` that names the columns of ``theta``.
    proposal
        ``(n,)`` integer id of the proposal each pair was drawn from
        (0 = the prior; later rounds of sequential methods add 1, 2, ...).
    n_invalid
        How many simulations were dropped for non-finite output.
    """

    theta: np.ndarray
    x: np.ndarray
    spec: ParamSpec
    proposal: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_invalid: int = 0

    def __post_init__(self) -> None:
        theta = np.asarray(self.theta)
        x = np.asarray(self.x)
        if theta.ndim != 2 or theta.shape[1] != self.spec.dim:
            raise ValueError(
                f"theta has shape {theta.shape}; expected (n, {self.spec.dim}) for "
                f"parameters {list(self.spec.names)}."
            )
        if x.ndim < 1 or x.shape[0] != theta.shape[0]:
            raise ValueError(
                f"x has shape {x.shape}; expected ({theta.shape[0]}, ...) to match theta."
            )
        if x.ndim == 1:
            x = x[:, None]
        proposal = (
            np.zeros(theta.shape[0], dtype=np.int32)
            if self.proposal is None
            else np.asarray(self.proposal, dtype=np.int32)
        )
        if proposal.shape != (theta.shape[0],):
            raise ValueError(f"proposal has shape {proposal.shape}; expected ({theta.shape[0]},).")
        object.__setattr__(self, "theta", theta)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "proposal", proposal)

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one simulated data set."""
        return tuple(self.x.shape[1:])

    def as_batch(self) -> dict[str, np.ndarray]:
        """The ``{"theta": (n, d), "x": (n, ...)}`` dict that objectives train on."""
        return {"theta": self.theta, "x": self.x}

    def params(self) -> dict[str, np.ndarray]:
        """``theta`` split into named arrays of shape ``(n, *shape)``."""
        return self.spec.unflatten(self.theta)

    def append(self, other: Simulations) -> Simulations:
        """Concatenate with simulations over the same parameters."""
        if other.spec.names != self.spec.names or other.spec.shapes != self.spec.shapes:
            raise ValueError("Cannot append simulations over different parameters.")
        if other.x_shape != self.x_shape:
            raise ValueError(f"x shapes differ: {self.x_shape} vs {other.x_shape}.")
        return replace(
            self,
            theta=np.concatenate([self.theta, other.theta]),
            x=np.concatenate([self.x, other.x]),
            proposal=np.concatenate([self.proposal, other.proposal]),
            n_invalid=self.n_invalid + other.n_invalid,
        )


@functools.lru_cache(maxsize=64)
def _batched(simulator):
    """One jitted, vmapped simulator per simulator function (compiled once, reused)."""
    return jax.jit(jax.vmap(simulator))


def _run_jax(simulator, theta: np.ndarray, seed_key, batch_size: int, progress: bool):
    n = theta.shape[0]
    keys = jax.random.split(seed_key, n)
    batched = _batched(simulator)
    out = []
    bar = tqdm(total=n, desc="simulate", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        k, t = keys[start:stop], jnp.asarray(theta[start:stop])
        pad = batch_size - (stop - start) if n > batch_size else 0
        if pad:  # pad to one static shape: one compilation
            k = jnp.concatenate([k, jnp.repeat(k[-1:], pad, 0)])
            t = jnp.concatenate([t, jnp.repeat(t[-1:], pad, 0)])
        x = np.asarray(batched(k, t))
        out.append(x[: stop - start])
        bar.update(stop - start)
    bar.close()
    return np.concatenate(out)


def _run_numpy(simulator, theta: np.ndarray, rng, batch_size: int, progress: bool):
    out = []
    n = theta.shape[0]
    bar = tqdm(total=n, desc="simulate", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        chunk = theta[start : start + batch_size]
        x = np.asarray(simulator(rng, chunk))
        if x.shape[0] != chunk.shape[0]:
            raise ValueError(
                f"The numpy simulator returned {x.shape[0]} rows for {chunk.shape[0]} "
                "parameter vectors; it must return x of shape (B, ...)."
            )
        out.append(x)
        bar.update(chunk.shape[0])
    bar.close()
    return np.concatenate(out)


def run_simulator(
    simulator: Callable,
    theta: np.ndarray,
    *,
    seed: int | None = None,
    backend: Literal["jax", "numpy"] = "jax",
    batch_size: int = 10_000,
    progress: bool = False,
) -> np.ndarray:
    """Run a simulator on every row of ``theta`` (``(n, d)``) and return ``x``.

    No filtering happens here; see :func:`simulate`.
    """
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2:
        raise ValueError(f"theta has shape {theta.shape}; expected (n, d).")
    batch_size = max(1, min(int(batch_size), theta.shape[0]))
    seeds = np.random.SeedSequence(seed)
    if backend == "jax":
        key = jax.random.key(int(seeds.generate_state(1)[0]))
        return _run_jax(simulator, theta, key, batch_size, progress)
    if backend == "numpy":
        return _run_numpy(simulator, theta, np.random.default_rng(seeds), batch_size, progress)
    raise ValueError(f"backend must be 'jax' or 'numpy', got {backend!r}.")


def _drop_invalid(theta: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    finite = np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    n_invalid = int((~finite).sum())
    if n_invalid == x.shape[0]:
        raise ValueError(
            f"All {n_invalid} simulations returned non-finite values (NaN or inf); "
            "check the simulator and the prior."
        )
    if n_invalid:
        warnings.warn(
            f"Dropped {n_invalid} of {x.shape[0]} simulations with non-finite output "
            f"({100 * n_invalid / x.shape[0]:.2f}%).",
            UserWarning,
            stacklevel=3,
        )
    return theta[finite], x[finite], n_invalid


def simulate(
    model: pm.Model,
    simulator: Callable,
    n: int,
    seed: int | None = None,
    *,
    names: Sequence[str] | None = None,
    backend: Literal["jax", "numpy"] = "jax",
    batch_size: int = 10_000,
    progress: bool = True,
) -> Simulations:
    """Draw ``n`` parameters from a PyMC prior and simulate data for each.

    Parameters
    ----------
    model
        The prior: a ``pm.Model`` whose free random variables are the parameters.
    simulator
        ``(rng_key, theta) -> x`` in JAX (one ``theta`` of shape ``(d,)``), or, with
        ``backend="numpy"``, ``(rng, theta) -> x`` over a batch ``theta`` ``(B, d)``.
    n
        Number of simulations (before dropping invalid ones).
    seed
        Seed for the prior draws and the simulator noise; same seed, same result.
    names
        Subset of the free variables that the simulator takes (default: all).
    backend
        ``"jax"`` or ``"numpy"``, see the module docstring.
    batch_size
        Simulations per compiled call (JAX) or per call (NumPy).
    progress
        Show a progress bar.

    Returns
    -------
    Simulations
        With ``theta`` ``(n_valid, d)``, ``x`` ``(n_valid, ...)`` and the count of
        dropped simulations in ``n_invalid``.

    Examples
    --------
    >>> with pm.Model() as prior:
    ...     mu = pm.Normal("mu", 0, 1)
    >>> sims = simulate(prior, lambda key, th: th + jax.random.normal(key, (1,)), 1000, seed=0)
    """
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    spec = param_spec(model, names)
    seeds = np.random.SeedSequence(seed).spawn(2)
    theta = draw_prior(model, int(n), seed=int(seeds[0].generate_state(1)[0]), names=names)
    x = run_simulator(
        simulator,
        theta,
        seed=int(seeds[1].generate_state(1)[0]),
        backend=backend,
        batch_size=batch_size,
        progress=progress,
    )
    theta, x, n_invalid = _drop_invalid(theta, x)
    return Simulations(theta=theta, x=x, spec=spec, n_invalid=n_invalid)
