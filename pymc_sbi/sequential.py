r"""Sequential neural posterior estimation (SNPE): rounds focused on one observation.

Single-round NPE spends its simulations everywhere under the prior.  When only
one observation :math:`x_o` matters, later rounds can draw their parameters
from the current posterior estimate :math:`\hat p_r(\theta \mid x_o)` (truncated
to the prior support, :func:`pymc_sbi.posterior.sample_posterior`) so the
simulations land where the posterior lives; the loss then corrects for the
proposal (:func:`pymc_sbi.objectives.snpe_c` -- APT, the default -- or
:func:`~pymc_sbi.objectives.snpe_b`).  The estimate is then only good near
:math:`x_o`: the rounds trade amortisation for simulation efficiency.

The driver is functional, in three pieces a custom loop can recombine:

:class:`SequentialData`
    The simulations of all rounds (a :class:`~pymc_sbi.Simulations` whose
    ``proposal`` column is the round id, 0 = prior) with the log densities of
    each :math:`\theta_i` under the training prior and under its proposal;
    :func:`append_simulations` adds a round; :meth:`SequentialData.as_batch`
    gives the ``{"theta", "x", "log_prior", "log_proposal"}`` batch the SNPE
    objectives train on.
:func:`train_round`
    One round of training (validation split, early stopping, gradient
    clipping, as :func:`pymc_sbi.fit`), starting from a previous round's
    :class:`~pymc_sbi.objectives.TrainState` or from scratch.  Returns the
    round's :class:`~pymc_sbi.Estimator` (``kind="npe"``) and its state.
:func:`run_snpe`
    The whole loop: round 0 simulates from the prior, round :math:`r \ge 1`
    from the truncated posterior estimate of round :math:`r - 1`.

Proposal densities
------------------
The truncated proposal of round :math:`r` is
:math:`\tilde p_r(\theta) = q_{r-1}(\theta \mid x_o)\,\mathbf 1[\theta \in S] / Z`,
recorded as ``log q(theta | x_o) - log(acceptance rate)`` (the rejection
sampler's acceptance rate estimates :math:`Z`).  SNPE-C never evaluates it
(the atomic loss contrasts parameters through the *prior* density only);
SNPE-B's self-normalised weights cancel a constant shared by a whole batch,
but a batch mixes rounds, so each round's density must be normalised -- the
estimate of :math:`Z` (relative error :math:`\sqrt{(1-Z)/(Z n)}`, tiny for the
:math:`n \ge 10^3` draws of a round) is what makes the constants agree.  With
``proposal_density="mixture"`` (the default for SNPE-B) every
:math:`\theta_i` is instead weighted against the mixture of all rounds'
proposals, :math:`\sum_r (n_r / N)\,\tilde p_r(\theta)` (the balance heuristic
of multiple importance sampling), whose weights are bounded by
:math:`N / n_0` while prior simulations are kept.

Options of :func:`train_round` (sbi's names in brackets)
--------------------------------------------------------
``resume_training``
    Continue from the previous round's parameters *and* optimizer state
    (Adam moments, step count).  The default continues from the previous
    parameters with a fresh optimizer (sbi's behaviour across rounds).
``retrain_from_scratch``
    Initialise a new network (and new z-scoring statistics from the current
    data) every round.
``discard_prior_samples``
    Drop the prior simulations (round 0) from training in rounds
    :math:`\ge 1`.
The z-scoring statistics are those of the first round the network was
initialised in, unless retrained from scratch (the parameters are tied to them).

References
----------
D. Greenberg, M. Nonnenmacher, J. Macke, "Automatic Posterior Transformation
for Likelihood-Free Inference", ICML 2019.  J.-M. Lueckmann et al.,
"Flexible statistical inference for mechanistic models of neural dynamics",
NeurIPS 2017.  sbi's ``SNPE_C.train`` for the option names.
"""

from __future__ import annotations

import functools
import math
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.objectives.snpe import snpe_b, snpe_c
from pymc_sbi.posterior import sample_posterior
from pymc_sbi.simulate import Simulations, run_simulator, simulate
from pymc_sbi.spec import ParamSpec
from pymc_sbi.training import make_optimizer

__all__ = [
    "SNPEResult",
    "SequentialData",
    "append_simulations",
    "prior_log_prob_fn",
    "run_snpe",
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
        return {
            "theta": self.simulations.theta[keep],
            "x": self.simulations.x[keep],
            "log_prior": self.log_prior[keep],
            "log_proposal": self.log_proposal[keep],
        }


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

    Rows with non-finite ``x`` are dropped (and counted, with a warning), as
    in :func:`pymc_sbi.simulate`; so are rows whose ``log_prior`` is not finite
    (outside the prior support) or whose ``log_proposal`` is NaN.

    Raises
    ------
    ValueError
        If ``log_proposal`` is missing (``None``): SNPE needs the proposal's
        density for SNPE-B, and to tell prior draws from others.
    """
    if log_proposal is None:
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
    ok &= np.isfinite(log_prior) & ~np.isnan(log_proposal)
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
make_optimizer_cached = functools.lru_cache(maxsize=32)(make_optimizer)


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
    best_state, best_loss, best_epoch = state, math.inf, -1
    train_hist: list[float] = []
    val_hist: list[float] = []
    stop_reason = "max_epochs"
    bar = tqdm(range(max_epochs), desc="snpe round", disable=not progress, leave=False)
    for epoch in bar:
        k_loop, k_epoch = jax.random.split(k_loop)
        new_state, train_loss = one_epoch(k_epoch, state)
        val_loss = validation_loss(new_state)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            warnings.warn(
                f"Non-finite loss at epoch {epoch} (train {train_loss}, validation {val_loss}); "
                f"training stopped and the parameters of epoch {best_epoch} were kept.",
                RuntimeWarning,
                stacklevel=2,
            )
            stop_reason = "non_finite_loss"
            break
        state = new_state
        train_hist.append(train_loss)
        val_hist.append(val_loss)
        if val_loss < best_loss:
            best_state, best_loss, best_epoch = state, val_loss, epoch
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}", best=best_epoch)
        if epoch - best_epoch >= patience:
            stop_reason = "early_stopping"
            break
    bar.close()
    if best_epoch < 0:
        raise FloatingPointError(
            "The loss was non-finite from the first epoch; nothing was learned. Check the "
            "simulations for extreme values or lower the learning rate."
        )
    history = {
        "train_loss": train_hist,
        "val_loss": val_hist,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "epochs": len(train_hist),
        "stop_reason": stop_reason,
        "train_seconds": time.perf_counter() - t0,
        "n_train": n_train,
        "n_val": n_val,
        "start": start,
    }
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


# ----------------------------------------------------------------- the driver
class SNPEResult(NamedTuple):
    """Output of :func:`run_snpe` (unpacks as ``estimator, estimators, simulations``).

    Attributes
    ----------
    estimator
        The last round's posterior estimator (``kind="npe"``).
    estimators
        One estimator per round; ``estimators[r].history`` has the round's
        training history plus ``round``, ``n_simulations`` (this round),
        ``n_total`` and ``acceptance_rate`` (of the proposal that drew this
        round's parameters; 1 for the prior).
    simulations
        All simulations; ``simulations.proposal`` is the round of each.
    """

    estimator: Estimator
    estimators: list[Estimator]
    simulations: Simulations


def _mixture_log_proposal(
    data: SequentialData, components: list[tuple[Callable, int]], prior_log: np.ndarray
) -> np.ndarray:
    r"""``log sum_r (n_r / N) p~_r(theta)`` for every ``theta`` of ``data``."""
    theta = data.simulations.theta
    sizes = np.array([m for _, m in components], np.float64)
    terms = [
        np.log(m / sizes.sum()) + (prior_log if fn is None else fn(theta)) for fn, m in components
    ]
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def run_snpe(
    prior_model,
    simulator: Callable,
    x_obs,
    rounds: int = 3,
    simulations_per_round: int | list[int] = 1000,
    seed: int = 0,
    method: Literal["snpe_c", "snpe_b"] = "snpe_c",
    network=None,
    *,
    num_atoms: int = 10,
    embedding=None,
    backend: Literal["jax", "numpy"] = "jax",
    proposal_density: Literal["own", "mixture"] | None = None,
    resume_training: bool = False,
    retrain_from_scratch: bool = False,
    discard_prior_samples: bool = False,
    progress: bool = True,
    **train_options: Any,
) -> SNPEResult:
    r"""Sequential NPE for one observation ``x_obs``: ``rounds`` rounds of simulate-and-train.

    Round 0 draws :math:`\theta` from the prior (:func:`pymc_sbi.simulate`);
    round :math:`r \ge 1` draws it from round :math:`r-1`'s posterior estimate
    given ``x_obs``, truncated to the prior support
    (:func:`pymc_sbi.posterior.sample_posterior`), and records the proposal's
    log density.  Each round trains on all simulations so far (see
    :func:`train_round` for the options).

    Parameters
    ----------
    prior_model
        The prior ``pm.Model`` (all its free variables are the parameters).
    simulator
        As for :func:`pymc_sbi.simulate` (``backend`` says which kind).
    x_obs
        The observation, of the simulator's output shape.
    rounds
        Number of rounds (1 = plain NPE with the SNPE objective).
    simulations_per_round
        Simulations per round (an int, or one per round).
    seed
        Seeds everything; same seed, same result.
    method
        ``"snpe_c"`` (APT, atomic loss) or ``"snpe_b"`` (importance weights).
    network
        Conditional density network (default ``nn.maf()``).
    num_atoms
        Atoms of the SNPE-C loss.
    embedding
        Optional summary network for ``x``.
    proposal_density
        What SNPE-B's weights divide by: ``"own"`` (the proposal each
        :math:`\theta` came from) or ``"mixture"`` (all rounds' proposals,
        the default for SNPE-B; see the module docstring).  SNPE-C does not
        use it.
    resume_training, retrain_from_scratch, discard_prior_samples
        See :func:`train_round`.
    progress
        Print one line per round (round, simulations, epochs, validation loss,
        acceptance rate, seconds).
    **train_options
        ``batch_size``, ``learning_rate``, ``validation_fraction``,
        ``max_epochs``, ``patience``, ``clip_norm``, ``optimizer`` for
        :func:`train_round`.

    Returns
    -------
    SNPEResult
        ``(estimator, estimators, simulations)``.
    """
    from pymc_sbi.prior import param_spec

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
    if method == "snpe_c":
        objective = snpe_c(network, num_atoms, embedding=embedding)
    elif method == "snpe_b":
        objective = snpe_b(network, embedding=embedding)
    else:
        raise ValueError(f"method must be 'snpe_c' or 'snpe_b', got {method!r}.")
    if proposal_density is None:
        proposal_density = "mixture" if method == "snpe_b" else "own"
    if proposal_density not in ("own", "mixture"):
        raise ValueError(f"proposal_density must be 'own' or 'mixture', got {proposal_density!r}.")

    spec = param_spec(prior_model)
    log_prior_fn = prior_log_prob_fn(prior_model, spec)
    round_seeds = np.random.SeedSequence(seed).spawn(rounds)
    data: SequentialData | None = None
    state: TrainState | None = None
    estimators: list[Estimator] = []
    components: list[tuple[Callable | None, int]] = []  # (log density or None = prior, n)
    for r in range(rounds):
        t0 = time.perf_counter()
        sim_seed, sample_seed, train_seed = (
            int(s) for s in round_seeds[r].generate_state(3, np.uint32)
        )
        if r == 0:
            sims = simulate(
                prior_model, simulator, sizes[0], seed=sim_seed, backend=backend, progress=False
            )
            theta, x, n_invalid = sims.theta, sims.x, sims.n_invalid
            log_prior = log_prior_fn(theta)
            log_proposal = log_prior.copy()
            acceptance = 1.0
            components.append((None, len(sims)))
        else:
            previous = estimators[-1]
            draws = sample_posterior(previous, x_obs, sizes[r], sample_seed)
            theta = np.asarray(draws.samples, np.float64)
            acceptance = float(draws.acceptance_rate)
            log_z = math.log(acceptance)
            x = run_simulator(simulator, theta, seed=sim_seed, backend=backend)
            log_prior = log_prior_fn(theta)

            def log_q(t, est=previous, log_z=log_z):
                lp = np.asarray(est.log_prob(jnp.asarray(x_obs), jnp.asarray(t)), np.float64)
                return lp - log_z

            log_proposal = log_q(theta)
            n_invalid = 0
            components.append((log_q, len(theta)))
        data = append_simulations(
            data,
            theta,
            x,
            r,
            log_proposal,
            log_prior=log_prior,
            spec=spec,
            n_invalid=n_invalid,
        )
        train_data = data
        if proposal_density == "mixture" and r > 0:
            mixed = _mixture_log_proposal(data, components, data.log_prior)
            train_data = SequentialData(data.simulations, data.log_prior, mixed)
        estimator, state = train_round(
            objective,
            train_data,
            train_seed,
            state=state,
            resume_training=resume_training,
            retrain_from_scratch=retrain_from_scratch,
            discard_prior_samples=discard_prior_samples,
            **train_options,
        )
        n_round = int(np.sum(data.proposal == r))
        history = dict(estimator.history)
        history.update(
            round=r,
            n_simulations=n_round,
            n_total=len(data),
            acceptance_rate=acceptance,
            round_seconds=time.perf_counter() - t0,
        )
        config = dict(estimator.config, method=method, num_atoms=num_atoms, round=r)
        estimator = Estimator.from_state(
            "npe",
            state,
            spec=spec,
            x_shape=data.simulations.x_shape,
            history=history,
            config=config,
        )
        estimators.append(estimator)
        if progress:
            tqdm.write(
                f"round {r}: {n_round} simulations ({len(data)} in all), "
                f"{history['epochs']} epochs, best val loss {history['best_val_loss']:.4f}, "
                f"proposal acceptance {acceptance:.3f}, {history['round_seconds']:.1f} s"
            )
    assert data is not None
    return SNPEResult(estimators[-1], estimators, data.simulations)
