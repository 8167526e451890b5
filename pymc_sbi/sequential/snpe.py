r"""Sequential neural posterior estimation (SNPE): rounds focused on one observation.

Single-round NPE spends its simulations everywhere under the prior.  When only
one observation :math:`x_o` matters, later rounds can draw their parameters
from the current posterior estimate :math:`\hat p_r(\theta \mid x_o)` (truncated
to the prior support, :func:`pymc_sbi.direct.sampling.sample_posterior`) so the
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

import math
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax.numpy as jnp
import numpy as np

from pymc_sbi.direct.sampling import sample_posterior
from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.objectives.npe import npe
from pymc_sbi.objectives.snpe import snpe_b, snpe_c
from pymc_sbi.prior import param_spec, prior_log_prob_fn
from pymc_sbi.seed import as_seed_int
from pymc_sbi.sequential.rounds import (
    SequentialData,
    append_simulations,
    record_round,
    round_sizes,
    train_round,
)
from pymc_sbi.sequential.truncation import hpr_threshold, sample_truncated_prior
from pymc_sbi.simulation import Simulations, run_simulator, simulate
from pymc_sbi.train.config import TrainConfig

__all__ = [
    "SNPEResult",
    "SequentialData",
    "append_simulations",
    "run_snpe",
    "train_round",
]


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


def _truncated_round(prior, estimator, x_obs, eps, n, seed):
    """Round parameters from the prior truncated to the ``1 - eps`` HPR of ``estimator``."""
    x = jnp.asarray(x_obs)

    def log_q(theta):
        return np.asarray(estimator.log_prob(x, jnp.asarray(theta)), np.float64)

    n_hpr = int(min(max(10_000, math.ceil(10.0 / eps)), 200_000))
    post = sample_posterior(estimator, x_obs, n_hpr, seed)
    threshold = hpr_threshold(log_q(post.samples), eps)
    draws = sample_truncated_prior(prior, log_q, threshold, n, seed + 1)
    return draws.theta, float(draws.acceptance_rate), threshold


def run_snpe(
    prior,
    simulator: Callable,
    x_obs,
    rounds: int = 3,
    simulations_per_round: int | list[int] = 1000,
    seed: int = 0,
    method: Literal["snpe_c", "snpe_b"] | Objective = "snpe_c",
    network=None,
    *,
    num_atoms: int = 10,
    embedding=None,
    backend: Literal["jax", "numpy"] = "jax",
    proposal_density: Literal["own", "mixture"] | None = None,
    resume_training: bool = False,
    retrain_from_scratch: bool = False,
    discard_prior_samples: bool = False,
    truncation: float | None = None,
    progressbar: bool = True,
    config: TrainConfig | None = None,
) -> SNPEResult:
    r"""Sequential NPE for one observation ``x_obs``: ``rounds`` rounds of simulate-and-train.

    Round 0 draws :math:`\theta` from the prior (:func:`pymc_sbi.simulation`);
    round :math:`r \ge 1` draws it from round :math:`r-1`'s posterior estimate
    given ``x_obs``, truncated to the prior support
    (:func:`pymc_sbi.direct.sampling.sample_posterior`), and records the proposal's
    log density.  Each round trains on all simulations so far (see
    :func:`train_round` for the options).

    Parameters
    ----------
    prior
        The prior ``pm.Model`` (all its free variables are the parameters).
    simulator
        As for :func:`pymc_sbi.simulation` (``backend`` says which kind).
    x_obs
        The observation, of the simulator's output shape.
    rounds
        Number of rounds (1 = plain NPE with the SNPE objective).
    simulations_per_round
        Simulations per round (an int, or one per round).
    seed
        Seeds everything; same seed, same result.
    method
        ``"snpe_c"`` (APT, atomic loss), ``"snpe_b"`` (importance weights), or
        an :class:`~pymc_sbi.objectives.Objective` built by the caller (then
        ``network``, ``num_atoms`` and ``embedding`` are ignored; reusing one
        objective object across calls reuses its compiled training step).
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
    truncation
        ``None`` (default): round :math:`r \ge 1` proposes from the posterior
        estimate, with the ``method``'s correction.  ``eps`` (e.g. ``1e-4``):
        TSNPE (Deistler et al. 2022) -- round :math:`r \ge 1` proposes from the
        prior truncated to the :math:`1 - \epsilon` highest-density region of
        round :math:`r-1`'s estimate (:mod:`pymc_sbi.sequential.truncation`), and every
        round trains with the plain NPE maximum-likelihood loss
        (:func:`pymc_sbi.direct` on ``network``/``embedding``; a custom
        ``method`` objective is used as given): inside the region the proposal
        is proportional to the prior, so no correction is needed.  The
        threshold is the ``eps``-quantile of :math:`\log q(\theta \mid x_o)`
        over ``max(10^4, 10/eps)`` (at most :math:`2 \cdot 10^5`) posterior
        draws; ``history["acceptance_rate"]`` is the region's prior mass.
    progressbar
        Print one line per round (round, simulations, epochs, validation loss,
        acceptance rate, seconds).
    config
        The :class:`~pymc_sbi.TrainConfig` of every round's training
        (:func:`~pymc_sbi.sequential.rounds.train_round`).

    Returns
    -------
    SNPEResult
        ``(estimator, estimators, simulations)``.
    """
    sizes = round_sizes(simulations_per_round, rounds)
    rounds = len(sizes)
    if truncation is not None and not 0.0 < float(truncation) < 1.0:
        raise ValueError(f"truncation must be a quantile in (0, 1), got {truncation}.")
    if isinstance(method, Objective):
        objective, method = method, "custom"
    elif truncation is not None and method in ("snpe_c", "snpe_b"):
        objective, method = npe(network, embedding=embedding), "tsnpe"
    elif method == "snpe_c":
        objective = snpe_c(network, num_atoms, embedding=embedding)
    elif method == "snpe_b":
        objective = snpe_b(network, embedding=embedding)
    else:
        raise ValueError(f"method must be 'snpe_c', 'snpe_b' or an Objective, got {method!r}.")
    if proposal_density is None:
        proposal_density = "mixture" if method == "snpe_b" else "own"
    if proposal_density not in ("own", "mixture"):
        raise ValueError(f"proposal_density must be 'own' or 'mixture', got {proposal_density!r}.")

    spec = param_spec(prior)
    log_prior_fn = prior_log_prob_fn(prior, spec)
    round_seeds = np.random.SeedSequence(as_seed_int(seed)).spawn(rounds)
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
                prior, simulator, sizes[0], seed=sim_seed, backend=backend, progressbar=False
            )
            theta, x, n_invalid = sims.theta, sims.x, sims.n_invalid
            log_prior = log_prior_fn(theta)
            log_proposal = log_prior.copy()
            acceptance = 1.0
            components.append((None, len(sims)))
        elif truncation is not None:
            theta, acceptance, threshold = _truncated_round(
                prior, estimators[-1], x_obs, truncation, sizes[r], sample_seed
            )
            x = run_simulator(simulator, theta, seed=sim_seed, backend=backend)
            log_prior = log_prior_fn(theta)
            log_proposal = log_prior - math.log(acceptance)  # p(theta) 1[in region] / mass
            n_invalid = 0
            components.append((None, len(theta)))  # unused: the NPE loss needs no density
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
            components.append((log_q, int(np.sum(np.all(np.isfinite(x.reshape(len(x), -1)), 1)))))
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
            # the mixture of the proposals the training data actually come from
            used = components[1:] if discard_prior_samples else components
            mixed = _mixture_log_proposal(data, used, data.log_prior)
            train_data = SequentialData(data.simulations, data.log_prior, mixed)
        estimator, state = train_round(
            objective,
            train_data,
            config,
            seed=train_seed,
            state=state,
            resume_training=resume_training,
            retrain_from_scratch=retrain_from_scratch,
            discard_prior_samples=discard_prior_samples,
        )
        extra = {"acceptance_rate": acceptance}
        if truncation is not None and r > 0:
            extra.update(proposal="truncated", hpr_threshold=threshold)
        estimator = record_round(
            estimator,
            data,
            r,
            t0,
            history=extra,
            config=dict(
                method=method,
                num_atoms=num_atoms,
                truncation=truncation,
                loss=objective.kind if method == "tsnpe" else method,
            ),
            progressbar=progressbar,
            note=f" (proposal acceptance {acceptance:.3f})",
        )
        estimators.append(estimator)
    assert data is not None
    return SNPEResult(estimators[-1], estimators, data.simulations)
