"""Training data and one training round of sequential NPE.

:class:`SequentialData` holds simulations with, for every row, the proposal it
was drawn from and the log densities of its ``theta`` under the training prior
and under that proposal (what the SNPE-B/-C losses need);
:func:`train_round` trains an SNPE objective on it with sbi's round options
(resume, retrain from scratch, discard prior samples). The multi-round driver
is :func:`pymc_sbi.sequential.run_snpe`.
"""

from __future__ import annotations

import functools
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.simulate import Simulations
from pymc_sbi.spec import ParamSpec
from pymc_sbi.training import early_stopping, make_optimizer

__all__ = [
    "SequentialData",
    "append_simulations",
    "make_optimizer_cached",
    "prior_log_prob_fn",
    "train_round",
]


# ------------------------------------------------------------------ the record
@dataclass(frozen=True)
class SequentialData:
    """Simulations of all rounds with the log densities the SNPE losses need.

    Attributes
    ----------
    simulations
        All pairs; ``simulations.proposal`` is the proposal (round) id of each,
        0 for the prior.
    log_prior
        ``(n,)`` log density of each ``theta`` under the training prior.
    log_proposal
        ``(n,)`` log density of each ``theta`` under the proposal it was drawn
        from (equal to ``log_prior`` for prior draws).
    """

    simulations: Simulations
    log_prior: np.ndarray
    log_proposal: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.simulations)
        for name in ("log_prior", "log_proposal"):
            value = np.asarray(getattr(self, name), np.float64).reshape(-1)
            if value.shape != (n,):
                raise ValueError(f"{name} has shape {value.shape}; expected ({n},).")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.simulations)

    @property
    def spec(self) -> ParamSpec:
        """The parameter spec of the simulations."""
        return self.simulations.spec

    @property
    def proposal(self) -> np.ndarray:
        """``(n,)`` proposal id of each pair (0 = prior)."""
        return self.simulations.proposal

    def as_batch(self, discard_prior_samples: bool = False) -> dict[str, np.ndarray]:
        """``{"theta", "x", "log_prior", "log_proposal"}``, optionally without prior draws.

        Prior draws are dropped only when other draws remain.
        """
        keep = np.ones(len(self), bool)
        if discard_prior_samples and np.any(self.proposal != 0):
            keep = self.proposal != 0
        batch = {
            "theta": self.simulations.theta[keep],
            "x": self.simulations.x[keep],
            "log_prior": self.log_prior[keep],
            "log_proposal": self.log_proposal[keep],
        }
        if self.simulations.covariates is not None:
            batch["covariates"] = self.simulations.covariates[keep]
        return batch


def append_simulations(
    record: SequentialData | None,
    theta,
    x,
    proposal_id: int,
    log_proposal,
    *,
    log_prior,
    spec: ParamSpec | None = None,
    n_invalid: int = 0,
    covariates=None,
    proposal_density_known: bool = True,
) -> SequentialData:
    """A new record with one more round of simulations.

    Parameters
    ----------
    record
        The record so far, or ``None`` for the first round (then ``spec`` is required).
    theta, x
        ``(n, d)`` parameters and ``(n, ...)`` simulated data.
    proposal_id
        Id of the proposal ``theta`` was drawn from (0 = prior).
    log_proposal, log_prior
        ``(n,)`` log densities of ``theta`` under that proposal and under the
        training prior.
    spec
        Parameter spec (only for the first round).
    n_invalid
        Simulations already dropped by the caller (added to the count).
    covariates
        ``(n, c)`` per-simulation covariates (only if the record has them).
    proposal_density_known
        ``False`` for proposals without a tractable density (MCMC draws of a
        posterior, as in sequential NLE/NRE, which never need it): then
        ``log_proposal`` may be ``None`` and is stored as NaN.

    Rows with non-finite ``x`` are dropped (and counted, with a warning), as
    in :func:`pymc_sbi.simulate`; so are rows whose ``log_prior`` is not finite
    (outside the prior support) or whose ``log_proposal`` is NaN.

    Raises
    ------
    ValueError
        If ``log_proposal`` is missing (``None``): SNPE needs the proposal's
        density for SNPE-B, and to tell prior draws from others.
    """
    if log_proposal is None and not proposal_density_known:
        log_proposal = np.nan
    elif log_proposal is None:
        raise ValueError(
            "append_simulations needs log_proposal, the log density of each theta under the "
            "proposal it was drawn from (log_prior for prior draws)."
        )
    if record is None and spec is None:
        raise ValueError("The first call of append_simulations needs spec.")
    spec = record.spec if record is not None else spec
    theta = np.asarray(theta, np.float64)
    x = np.asarray(x)
    log_prior = np.broadcast_to(np.asarray(log_prior, np.float64), theta.shape[:1])
    log_proposal = np.broadcast_to(np.asarray(log_proposal, np.float64), theta.shape[:1])
    ok = np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    ok &= np.isfinite(log_prior)
    if proposal_density_known:
        ok &= ~np.isnan(log_proposal)
    dropped = int((~ok).sum())
    if dropped == ok.size:
        raise ValueError(f"All {dropped} simulations of proposal {proposal_id} are invalid.")
    if dropped:
        warnings.warn(
            f"Dropped {dropped} of {ok.size} simulations of proposal {proposal_id} (non-finite "
            "x or parameters outside the prior support).",
            UserWarning,
            stacklevel=2,
        )
    new = Simulations(
        theta=theta[ok],
        x=x[ok],
        spec=spec,
        proposal=np.full(int(ok.sum()), int(proposal_id), np.int32),
        n_invalid=n_invalid + dropped,
        covariates=None if covariates is None else np.asarray(covariates, float)[ok],
    )
    new_record = SequentialData(new, log_prior[ok], log_proposal[ok])
    if record is None:
        return new_record
    return SequentialData(
        record.simulations.append(new),
        np.concatenate([record.log_prior, new_record.log_prior]),
        np.concatenate([record.log_proposal, new_record.log_proposal]),
    )


def prior_log_prob_fn(prior_model, spec: ParamSpec) -> Callable[[np.ndarray], np.ndarray]:
    """``theta (n, d) -> log p(theta) (n,)`` for a PyMC prior, compiled to JAX once.

    The joint log density of the model's free variables (hierarchies included,
    :func:`pymc_sbi.posterior_term.prior_log_density`), ``-inf`` outside the
    support.
    """
    import pytensor.tensor as pt
    from pymc.sampling.jax import get_jaxified_graph

    from pymc_sbi.posterior_term import prior_log_density

    theta = pt.vector("theta", shape=(spec.dim,), dtype="float64")
    logp = prior_log_density(prior_model, types.SimpleNamespace(spec=spec), theta)
    fn = get_jaxified_graph(inputs=[theta], outputs=[logp])
    batched = jax.jit(jax.vmap(lambda t: jnp.reshape(fn(t)[0], ())))

    def log_prob(theta_batch) -> np.ndarray:
        return np.asarray(batched(jnp.asarray(theta_batch)), np.float64)

    return log_prob


# -------------------------------------------------------------------- training
# Rounds change the number of simulations, so an epoch compiled over the whole
# training set (as in ``fit``) would recompile every round (seconds each).  Here
# the compiled units are one gradient step and one evaluation on a batch of
# fixed shape; the epoch loop runs in Python.  Same optimizer settings, same
# objective, same batch size: no recompilation across rounds or calls.
_make_optimizer_cached = functools.lru_cache(maxsize=32)(make_optimizer)


def make_optimizer_cached(optimizer, learning_rate, clip_norm) -> optax.GradientTransformation:
    """:func:`~pymc_sbi.training.make_optimizer`, one object per setting (a static jit argument)."""
    try:
        return _make_optimizer_cached(optimizer, learning_rate, clip_norm)
    except TypeError:  # an unhashable custom optimizer: no reuse across calls
        return make_optimizer(optimizer, learning_rate, clip_norm)


@functools.lru_cache(maxsize=32)
def _jitted(fn):
    return jax.jit(fn)


def _chunks(n: int, size: int) -> list[np.ndarray]:
    """Row blocks of ``size`` covering ``0..n-1`` (the last one overlaps the previous)."""
    if n <= size:
        return [np.arange(n)]
    starts = [*range(0, n - size, size), n - size]
    return [np.arange(a, a + size) for a in starts]


def _take(batch: dict[str, np.ndarray], idx) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v[idx]) for k, v in batch.items()}


def train_round(
    objective: Objective,
    data: SequentialData,
    seed: int = 0,
    *,
    state: TrainState | None = None,
    resume_training: bool = False,
    retrain_from_scratch: bool = False,
    discard_prior_samples: bool = False,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    batch_size: int = 200,
    validation_fraction: float = 0.1,
    max_epochs: int = 1000,
    patience: int = 20,
    clip_norm: float | None = 5.0,
    progress: bool = False,
) -> tuple[Estimator, TrainState]:
    """Train an SNPE objective on all rounds' simulations so far.

    Parameters
    ----------
    objective
        :func:`~pymc_sbi.objectives.snpe_c` or :func:`~pymc_sbi.objectives.snpe_b`
        (or ``npe`` for prior-only data: extra batch columns are ignored).
    data
        The :class:`SequentialData` record.
    seed
        Seeds the split, initialisation, shuffling and atoms.
    state
        The previous round's state (``None``: initialise a new network).
    resume_training
        Keep ``state``'s optimizer and its state (its ``optimizer``,
        ``learning_rate`` and ``clip_norm``); otherwise a fresh optimizer
        starts from ``state``'s parameters.
    retrain_from_scratch
        Ignore ``state``: new network, new z-scoring statistics.
    discard_prior_samples
        Train without the prior (proposal 0) simulations when others exist.
    optimizer, learning_rate, batch_size, validation_fraction, max_epochs, patience, clip_norm
        As in :func:`pymc_sbi.fit` (``patience`` is sbi's ``stop_after_epochs``).
    progress
        Show a progress bar.

    Returns
    -------
    (Estimator, TrainState)
        The estimator with the best validation loss of this round, and the
        state it came from (pass it to the next round).
    """
    if resume_training and retrain_from_scratch:
        raise ValueError("resume_training and retrain_from_scratch exclude each other.")
    t0 = time.perf_counter()
    batch = data.as_batch(discard_prior_samples)
    n = batch["theta"].shape[0]
    if n < 2:
        raise ValueError("Need at least 2 simulations to train.")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    k_split, k_init, k_loop, k_eval = jax.random.split(jax.random.key(seed), 4)
    perm = np.asarray(jax.random.permutation(k_split, n))
    n_val = max(1, round(validation_fraction * n)) if validation_fraction > 0 else 0
    if n - n_val < 2:
        raise ValueError(f"Too few simulations ({n}) to hold out a validation set.")
    batch = {k: np.asarray(v) for k, v in batch.items()}
    train = {k: v[perm[n_val:]] for k, v in batch.items()}
    val = {k: v[perm[:n_val]] for k, v in batch.items()} if n_val else train
    n_train = n - n_val
    size = min(int(batch_size), n_train)
    if state is None or retrain_from_scratch:
        tx = make_optimizer_cached(optimizer, learning_rate, clip_norm)
        state = objective.init(k_init, {k: jnp.asarray(v) for k, v in train.items()}, tx)
        start = "scratch"
    elif resume_training:
        start = "resume"
    else:
        tx = make_optimizer_cached(optimizer, learning_rate, clip_norm)
        state = state.replace(opt_state=tx.init(state.params), tx=tx)
        start = "warm"
    step = _jitted(objective.step)
    evaluate = _jitted(objective.evaluate)
    val_chunks = _chunks(val["theta"].shape[0], size)

    def one_epoch(rng_key, state):
        k_perm, k_steps = jax.random.split(rng_key)
        order = np.asarray(jax.random.permutation(k_perm, n_train))
        n_batches = n_train // size  # the last incomplete batch is dropped (a new one each epoch)
        keys = jax.random.split(k_steps, n_batches)
        losses = []
        for i in range(n_batches):
            state, metrics = step(keys[i], state, _take(train, order[i * size : (i + 1) * size]))
            losses.append(metrics["loss"])
        return state, float(jnp.mean(jnp.stack(losses)))

    def validation_loss(state):
        keys = jax.random.split(k_eval, len(val_chunks))
        losses = [
            evaluate(k, state, _take(val, c))["loss"] for k, c in zip(keys, val_chunks, strict=True)
        ]
        return float(jnp.mean(jnp.stack(losses)))

    # a fixed key for the validation loss: the atoms of the atomic loss do not
    # change between epochs, so early stopping sees the network change, not noise
    def epoch(state):
        nonlocal k_loop
        k_loop, k_epoch = jax.random.split(k_loop)
        new_state, train_loss = one_epoch(k_epoch, state)
        return new_state, train_loss, validation_loss(new_state)

    best_state, history = early_stopping(
        epoch, state, max_epochs, patience, progress=progress, desc="snpe round"
    )
    history.update(
        train_seconds=time.perf_counter() - t0, n_train=n_train, n_val=n_val, start=start
    )
    config = {
        "seed": seed,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "validation_fraction": validation_fraction,
        "max_epochs": max_epochs,
        "patience": patience,
        "clip_norm": clip_norm,
        "custom_optimizer": optimizer is not None,
        "resume_training": resume_training,
        "retrain_from_scratch": retrain_from_scratch,
        "discard_prior_samples": discard_prior_samples,
    }
    estimator = Estimator.from_state(
        objective.kind,
        best_state,
        spec=data.spec,
        x_shape=data.simulations.x_shape,
        history=history,
        config=config,
    )
    return estimator, best_state
