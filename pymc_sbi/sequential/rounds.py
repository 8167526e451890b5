"""Training data and one training round of sequential NPE.

:class:`SequentialData` holds simulations with, for every row, the proposal it
was drawn from and the log densities of its ``theta`` under the training prior
and under that proposal (what the SNPE-B/-C losses need);
:func:`train_round` trains an SNPE objective on it with sbi's round options
(resume, retrain from scratch, discard prior samples). The multi-round driver
is :func:`pymc_sbi.sequential.snpe.run_snpe`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import jax
import numpy as np
from tqdm.auto import tqdm

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.seed import as_key
from pymc_sbi.simulation import Simulations
from pymc_sbi.spec import ParamSpec
from pymc_sbi.train.config import TrainConfig
from pymc_sbi.train.loop import init_state, train_loop, train_validation_split

__all__ = [
    "SequentialData",
    "append_simulations",
    "record_round",
    "round_sizes",
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
    in :func:`pymc_sbi.simulation`; so are rows whose ``log_prior`` is not finite
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


# -------------------------------------------------------------------- training
def train_round(
    objective: Objective,
    data: SequentialData,
    config: TrainConfig | None = None,
    *,
    seed=0,
    state: TrainState | None = None,
    resume_training: bool = False,
    retrain_from_scratch: bool = False,
    discard_prior_samples: bool = False,
    progressbar: bool = False,
) -> tuple[Estimator, TrainState]:
    """Train an objective on all rounds' simulations so far (one round of a sequential method).

    Rounds change the number of simulations, so the loop compiles one gradient
    step and one evaluation of fixed shape (``train_loop(compile="step")``)
    instead of a whole epoch: nothing recompiles across rounds or calls with
    the same config.

    Parameters
    ----------
    objective
        :func:`~pymc_sbi.objectives.snpe_c` or :func:`~pymc_sbi.objectives.snpe_b`
        (or any objective for prior-only data: extra batch columns are ignored).
    data
        The :class:`SequentialData` record.
    config
        The :class:`~pymc_sbi.TrainConfig` (``patience`` is sbi's ``stop_after_epochs``).
    seed
        An int or a JAX key; seeds the split, initialisation, shuffling and atoms.
    state
        The previous round's state (``None``: initialise a new network).
    resume_training
        Keep ``state``'s optimizer and its state; otherwise a fresh optimizer
        (from ``config``) starts from ``state``'s parameters.
    retrain_from_scratch
        Ignore ``state``: new network, new z-scoring statistics.
    discard_prior_samples
        Train without the prior (proposal 0) simulations when others exist.
    progressbar
        Show a progress bar.

    Returns
    -------
    (Estimator, TrainState)
        The estimator with the best validation loss of this round, and the
        state it came from (pass it to the next round).
    """
    if resume_training and retrain_from_scratch:
        raise ValueError("resume_training and retrain_from_scratch exclude each other.")
    config = TrainConfig() if config is None else config
    batch = data.as_batch(discard_prior_samples)
    n = batch["theta"].shape[0]
    if n < 2:
        raise ValueError(f"Need at least 2 simulations to train, got {n}.")
    k_split, k_init, k_loop, k_eval = jax.random.split(as_key(seed), 4)
    train, val = train_validation_split(k_split, batch, config.validation_fraction)
    n_train = int(train["theta"].shape[0])
    if n_train < 2:
        raise ValueError(f"Too few simulations ({n}) to hold out a validation set.")
    if state is None or retrain_from_scratch:
        state, start = init_state(objective, train, config, k_init), "scratch"
    elif resume_training:
        start = "resume"
    else:
        tx = config.make_optimizer(n_train)
        state, start = state.replace(opt_state=tx.init(state.params), tx=tx), "warm"
    best_state, history = train_loop(
        objective,
        train,
        val,
        config,
        k_loop,
        state,
        compile="step",
        eval_key=k_eval,
        progressbar=progressbar,
        desc="round",
    )
    history["start"] = start
    record = config.to_dict()
    record.update(
        seed=int(seed) if not hasattr(seed, "dtype") else "key",
        resume_training=resume_training,
        retrain_from_scratch=retrain_from_scratch,
        discard_prior_samples=discard_prior_samples,
    )
    estimator = Estimator.from_state(
        objective.kind,
        best_state,
        spec=data.spec,
        x_shape=data.simulations.x_shape,
        history=history,
        config=record,
    )
    return estimator, best_state


def record_round(
    estimator: Estimator,
    data: SequentialData,
    round_index: int,
    started: float,
    *,
    history: dict | None = None,
    config: dict | None = None,
    progressbar: bool = False,
    note: str = "",
) -> Estimator:
    """The round's estimator with the round recorded in its ``history`` and ``config``.

    ``history`` gains ``round``, ``n_simulations`` (of this round), ``n_total``
    and ``round_seconds`` (since ``started``, a ``time.perf_counter()``
    reading, simulation included) plus ``history``; ``config`` gains ``round``
    plus ``config``. With ``progressbar`` one summary line is printed.
    """
    n_round = int(np.sum(data.proposal == round_index))
    hist = dict(estimator.history)
    hist.update(
        round=round_index,
        n_simulations=n_round,
        n_total=len(data),
        round_seconds=time.perf_counter() - started,
        **(history or {}),
    )
    record = dict(estimator.config, round=round_index, **(config or {}))
    if progressbar:
        tqdm.write(
            f"round {round_index}{note}: {n_round} simulations ({len(data)} in all), "
            f"{hist['epochs']} epochs, best val loss {hist['best_val_loss']:.4f}, "
            f"{hist['round_seconds']:.1f} s"
        )
    return replace(estimator, history=hist, config=record)


def round_sizes(simulations_per_round, rounds: int) -> list[int]:
    """Simulations of each round: an int for every round, or one per round (validated)."""
    rounds = int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}.")
    sizes = (
        [int(simulations_per_round)] * rounds
        if np.ndim(simulations_per_round) == 0
        else [int(s) for s in simulations_per_round]
    )
    if len(sizes) != rounds:
        raise ValueError(f"simulations_per_round has {len(sizes)} entries for {rounds} rounds.")
    if min(sizes) < 2:
        raise ValueError(f"Every round needs at least 2 simulations, got {sizes}.")
    return sizes
