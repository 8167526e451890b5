r"""Simulate from a PyMC prior: the training data of every neural estimator.

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

**Per-trial covariates.** A likelihood of single trials often depends on
known experimental conditions :math:`s` (stimulus strength, ...). Pass a
*design* ``covariates=`` (an array of rows to resample, or a function
``(rng, n) -> (n, c)``); each simulation then gets its own row ``s_i``, the
simulator takes it as a third argument (``simulator(rng_key, theta, s)`` in
JAX, ``simulator(rng, theta, s)`` over a batch in NumPy) and the
:class:`Simulations` keep it, so that a likelihood estimator trained on them
models :math:`q(x \mid \theta, s)` (see :mod:`pymc_sbi.objectives.covariates`).
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
from pymc_sbi.seed import as_seed_int
from pymc_sbi.spec import ParamSpec

__all__ = ["Simulations", "SimulatorError", "draw_covariates", "run_simulator", "simulate"]


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
    covariates
        ``(n, c)`` per-simulation covariates (experimental conditions), or ``None``.
    """

    theta: np.ndarray
    x: np.ndarray
    spec: ParamSpec
    proposal: np.ndarray = field(default=None)  # type: ignore[assignment]
    n_invalid: int = 0
    covariates: np.ndarray | None = None

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
        if self.covariates is not None:
            cov = np.asarray(self.covariates, dtype=float)
            cov = cov[:, None] if cov.ndim == 1 else cov
            if cov.ndim != 2 or cov.shape[0] != theta.shape[0]:
                raise ValueError(
                    f"covariates have shape {np.shape(self.covariates)}; expected "
                    f"({theta.shape[0]}, c) -- one row per simulation."
                )
            object.__setattr__(self, "covariates", cov)

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one simulated data set."""
        return tuple(self.x.shape[1:])

    @property
    def n_covariates(self) -> int:
        """Number of per-simulation covariates (0 without)."""
        return 0 if self.covariates is None else int(self.covariates.shape[1])

    def as_batch(self) -> dict[str, np.ndarray]:
        """The ``{"theta": (n, d), "x": (n, ...)}`` dict that objectives train on.

        It holds ``"covariates": (n, c)`` too when the simulations have them.
        """
        batch = {"theta": self.theta, "x": self.x}
        if self.covariates is not None:
            batch["covariates"] = self.covariates
        return batch

    def params(self) -> dict[str, np.ndarray]:
        """``theta`` split into named arrays of shape ``(n, *shape)``."""
        return self.spec.unflatten(self.theta)

    def append(self, other: Simulations) -> Simulations:
        """Concatenate with simulations over the same parameters."""
        if other.spec.names != self.spec.names or other.spec.shapes != self.spec.shapes:
            raise ValueError("Cannot append simulations over different parameters.")
        if other.x_shape != self.x_shape:
            raise ValueError(f"x shapes differ: {self.x_shape} vs {other.x_shape}.")
        if other.n_covariates != self.n_covariates:
            raise ValueError(
                f"Cannot append simulations with {other.n_covariates} covariates to ones with "
                f"{self.n_covariates}."
            )
        cov = None
        if self.covariates is not None:
            cov = np.concatenate([self.covariates, other.covariates])
        return replace(
            self,
            theta=np.concatenate([self.theta, other.theta]),
            x=np.concatenate([self.x, other.x]),
            proposal=np.concatenate([self.proposal, other.proposal]),
            n_invalid=self.n_invalid + other.n_invalid,
            covariates=cov,
        )


class SimulatorError(RuntimeError):
    """The simulator failed (raised, or returned something unusable) in one batch.

    The message names the batch, the simulation indices and the seed; the
    simulations finished before the failing batch are kept.

    Attributes
    ----------
    batch
        Index of the failing batch.
    indices
        ``(start, stop)``: the simulations of the failing batch.
    seed
        The seed of the run (``None`` for an unseeded run).
    theta
        ``(stop - start, d)`` parameters of the failing batch.
    completed
        ``(theta, x)`` of the simulations finished before it (``x`` ``(start, ...)``),
        or, when raised by :func:`simulate`, a :class:`Simulations` record of them
        (non-finite outputs dropped).
    """

    def __init__(self, message, *, batch, indices, seed, theta, completed):
        super().__init__(message)
        self.batch, self.indices, self.seed = batch, indices, seed
        self.theta, self.completed = theta, completed


_JAX_HINT = (
    " With backend='jax' the simulator is traced by JAX: it takes (rng_key, theta) for one "
    "theta of shape (d,) and uses jax.numpy and jax.random. A NumPy simulator "
    "simulator(rng, theta_batch) needs backend='numpy'."
)


def _check_output(x, rows: int, event_shape, *, backend: str, where: str) -> np.ndarray:
    """``x`` as a real numeric array of ``rows`` rows, or a clear error saying what was wrong."""
    if isinstance(x, list | tuple):
        raise TypeError(
            f"The simulator returned a {type(x).__name__} of {len(x)} items {where}; it must "
            "return one array (x of one simulation, or a stacked batch for backend='numpy'): "
            "combine the parts with jnp.stack / jnp.concatenate."
        )
    x = np.asarray(x)
    if x.dtype == object:
        raise TypeError(
            f"The simulator returned an array of Python objects {where}; it must return real "
            "numbers (float or int). Ragged outputs need padding to one shape."
        )
    if np.iscomplexobj(x):
        raise TypeError(
            f"The simulator returned complex values (dtype {x.dtype}) {where}; it must return "
            "real numbers. Return the parts you model, e.g. jnp.stack([z.real, z.imag], -1)."
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"The simulator returned dtype {x.dtype} {where}; expected real numbers.")
    if x.ndim < 1 or x.shape[0] != rows:
        per = "a batch theta (B, d) -> x (B, ...)" if backend == "numpy" else "one theta -> x"
        raise ValueError(
            f"The simulator returned x of shape {x.shape} for {rows} parameter vectors {where}; "
            f"expected ({rows}, ...) ({per})."
        )
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"The simulator returned x of shape {tuple(x.shape[1:])} per simulation {where}, "
            f"but {tuple(event_shape)} in the batches before: every simulation must have the "
            "same shape (pad variable-length outputs)."
        )
    return x


@functools.lru_cache(maxsize=64)
def _batched(simulator):
    """One jitted, vmapped simulator per simulator function (compiled once, reused)."""
    return jax.jit(jax.vmap(simulator))


def _batches(n: int, batch_size: int):
    for i, start in enumerate(range(0, n, batch_size)):
        yield i, start, min(start + batch_size, n)


def _fail(err, i, start, stop, n, seed, theta, done, hint=""):
    raise SimulatorError(
        f"The simulator failed in batch {i} (simulations {start}-{stop - 1} of {n}, seed "
        f"{seed}): {type(err).__name__}: {err}.{hint} The {start} simulations finished before "
        "this batch are kept in the error's `completed` attribute.",
        batch=i,
        indices=(start, stop),
        seed=seed,
        theta=theta[start:stop],
        completed=(theta[:start], np.concatenate(done) if done else None),
    ) from err


def _run_jax(simulator, theta, seed_key, batch_size, progressbar, cov=None, seed=None):
    n = theta.shape[0]
    keys = jax.random.split(seed_key, n)
    batched = _batched(simulator)
    out: list[np.ndarray] = []
    bar = tqdm(total=n, desc="simulate", disable=not progressbar, leave=False)
    for i, start, stop in _batches(n, batch_size):
        args = [keys[start:stop], jnp.asarray(theta[start:stop])]
        if cov is not None:
            args.append(jnp.asarray(cov[start:stop]))
        pad = batch_size - (stop - start) if n > batch_size else 0
        if pad:  # pad to one static shape: one compilation
            args = [jnp.concatenate([a, jnp.repeat(a[-1:], pad, 0)]) for a in args]
        where = f"in batch {i} (simulations {start}-{stop - 1}, seed {seed})"
        try:
            raw = batched(*args)
        except Exception as err:
            # errors of tracing: a NumPy simulator given to the JAX backend, most often
            traced = (jax.errors.JAXTypeError, IndexError, TypeError, AttributeError)
            hint = _JAX_HINT if isinstance(err, traced) else ""
            _fail(err, i, start, stop, n, seed, theta, out, hint)
        if isinstance(raw, list | tuple):
            _check_output(raw, stop - start, None, backend="jax", where=where)
        x = _check_output(
            np.asarray(raw)[: stop - start],
            stop - start,
            out[0].shape[1:] if out else None,
            backend="jax",
            where=where,
        )
        out.append(x)
        bar.update(stop - start)
    bar.close()
    return np.concatenate(out)


def _run_numpy(simulator, theta, rng, batch_size, progressbar, cov=None, seed=None):
    out: list[np.ndarray] = []
    n = theta.shape[0]
    bar = tqdm(total=n, desc="simulate", disable=not progressbar, leave=False)
    for i, start, stop in _batches(n, batch_size):
        chunk = theta[start:stop]
        try:
            if cov is None:
                raw = simulator(rng, chunk)
            else:
                raw = simulator(rng, chunk, cov[start:stop])
        except Exception as err:
            _fail(err, i, start, stop, n, seed, theta, out)
        where = f"in batch {i} (simulations {start}-{stop - 1}, seed {seed})"
        x = _check_output(
            raw, chunk.shape[0], out[0].shape[1:] if out else None, backend="numpy", where=where
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
    progressbar: bool = False,
    covariates: np.ndarray | None = None,
) -> np.ndarray:
    """Run a simulator on every row of ``theta`` (``(n, d)``) and return ``x``.

    With ``covariates`` ``(n, c)`` the simulator takes row ``i`` of them as its
    third argument. No filtering happens here; see :func:`simulate`.

    Raises
    ------
    SimulatorError
        If the simulator raises: the message names the batch, the simulation
        indices and the seed; the simulations finished before are in
        ``err.completed``.
    TypeError, ValueError
        If it returns a list, complex or object values, the wrong number of
        rows, or a shape that differs between batches (naming the batch, what
        was expected and what came back).
    """
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2:
        raise ValueError(f"theta has shape {theta.shape}; expected (n, d).")
    cov = None
    if covariates is not None:
        cov = np.asarray(covariates, dtype=float)
        cov = cov[:, None] if cov.ndim == 1 else cov
        if cov.ndim != 2 or cov.shape[0] != theta.shape[0]:
            raise ValueError(
                f"covariates have shape {np.shape(covariates)}; expected ({theta.shape[0]}, c)."
            )
    batch_size = max(1, min(int(batch_size), theta.shape[0]))
    seeds = np.random.SeedSequence(None if seed is None else as_seed_int(seed))
    if backend == "jax":
        key = jax.random.key(int(seeds.generate_state(1)[0]))
        return _run_jax(simulator, theta, key, batch_size, progressbar, cov, seed)
    if backend == "numpy":
        rng = np.random.default_rng(seeds)
        return _run_numpy(simulator, theta, rng, batch_size, progressbar, cov, seed)
    raise ValueError(f"backend must be 'jax' or 'numpy', got {backend!r}.")


def draw_covariates(covariates, n: int, seed: int | None = None) -> np.ndarray:
    """``(n, c)`` covariates from a design: rows resampled uniformly, or ``covariates(rng, n)``.

    Parameters
    ----------
    covariates
        An array ``(m, c)`` (or ``(m,)`` for one covariate) of design rows, each
        drawn with probability ``1/m``; or a function ``(rng, n) -> (n, c)``
        with ``rng`` a ``numpy.random.Generator``.
    n
        Number of rows to draw.
    seed
        Seed of the draw.
    """
    rng = np.random.default_rng(seed)
    if callable(covariates):
        out = np.asarray(covariates(rng, n), dtype=float)
        out = out[:, None] if out.ndim == 1 else out
        if out.ndim != 2 or out.shape[0] != n:
            raise ValueError(
                f"The covariate function returned shape {out.shape}; expected ({n}, c)."
            )
        return out
    design = np.asarray(covariates, dtype=float)
    design = design[:, None] if design.ndim == 1 else design
    if design.ndim != 2 or design.shape[0] < 1:
        raise ValueError(
            f"covariates design has shape {np.shape(covariates)}; expected (m, c) rows "
            "(or (m,) for one covariate), or a function (rng, n) -> (n, c)."
        )
    return design[rng.integers(0, design.shape[0], n)]


def _finite_rows(x: np.ndarray) -> tuple[np.ndarray, int]:
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
    return finite, n_invalid


def simulate(
    prior: pm.Model,
    simulator: Callable,
    num_simulations: int,
    seed: int | None = None,
    *,
    names: Sequence[str] | None = None,
    backend: Literal["jax", "numpy"] = "jax",
    batch_size: int = 10_000,
    progressbar: bool = True,
    covariates=None,
) -> Simulations:
    """Draw ``num_simulations`` parameters from a PyMC prior and simulate data for each.

    Parameters
    ----------
    prior
        The prior: a ``pm.Model`` whose free random variables are the parameters.
    simulator
        ``(rng_key, theta) -> x`` in JAX (one ``theta`` of shape ``(d,)``), or, with
        ``backend="numpy"``, ``(rng, theta) -> x`` over a batch ``theta`` ``(B, d)``.
    num_simulations
        Number of simulations (before dropping invalid ones).
    seed
        Seed for the prior draws and the simulator noise; same seed, same result.
    names
        Subset of the free variables that the simulator takes (default: all).
    backend
        ``"jax"`` or ``"numpy"``, see the module docstring.
    batch_size
        Simulations per compiled call (JAX) or per call (NumPy).
    progressbar
        Show a progress bar.
    covariates
        A design of per-trial covariates (see :func:`draw_covariates`): every
        simulation gets one row ``s_i`` and the simulator is called as
        ``simulator(rng_key, theta, s)`` (NumPy: ``simulator(rng, theta, s)``).

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
    if isinstance(num_simulations, bool) or not isinstance(num_simulations, int | np.integer):
        raise TypeError(f"num_simulations must be an integer, got {num_simulations!r}.")
    n = int(num_simulations)
    if n < 1:
        raise ValueError(f"num_simulations must be a positive integer, got {n}.")
    spec = param_spec(prior, names)
    seeds = np.random.SeedSequence(None if seed is None else as_seed_int(seed)).spawn(3)
    theta = draw_prior(prior, n, seed=int(seeds[0].generate_state(1)[0]), names=names)
    cov = None
    if covariates is not None:
        cov = draw_covariates(covariates, n, seed=int(seeds[2].generate_state(1)[0]))
    try:
        x = run_simulator(
            simulator,
            theta,
            seed=int(seeds[1].generate_state(1)[0]),
            backend=backend,
            batch_size=batch_size,
            progressbar=progressbar,
            covariates=cov,
        )
    except SimulatorError as err:
        done_theta, done_x = err.completed
        if done_x is not None and len(done_x):
            ok = np.all(np.isfinite(done_x.reshape(done_x.shape[0], -1)), axis=1)
            done_cov = None if cov is None else cov[: len(done_x)][ok]
            err.completed = Simulations(
                theta=done_theta[ok],
                x=done_x[ok],
                spec=spec,
                n_invalid=int((~ok).sum()),
                covariates=done_cov,
            )
        err.args = (f"{err.args[0]} (simulate(..., seed={seed}) derives that seed from its own.)",)
        raise
    keep, n_invalid = _finite_rows(x)
    if cov is not None:
        cov = cov[keep]
    return Simulations(theta=theta[keep], x=x[keep], spec=spec, n_invalid=n_invalid, covariates=cov)
