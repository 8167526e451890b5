r"""Ensembles of independently trained estimators, trained together with ``jax.vmap``.

:func:`fit_ensemble` trains ``E`` members of one objective on the same
simulations -- each with its own initialisation, shuffling and step keys --
as *one* compiled program per epoch (:class:`pymc_sbi.Runner` with
``members=E``), and returns an :class:`~pymc_sbi.Estimator` with
``members=E``. Such an estimator is the uniform mixture of its members,

.. math::

    q(x \mid \theta) = \frac1E \sum_{e=1}^E q_e(x \mid \theta), \qquad
    \log q(x \mid \theta) = \operatorname{logsumexp}_{e} \log q_e(x \mid \theta) - \log E,

for likelihoods (NLE, MNLE) and :math:`q(\theta \mid x)` likewise for
posteriors (NPE): a normalised density, sampled by picking a member uniformly
per draw. For ratio estimators the log-ratio is the log-mean-exp of the
members' ratios, :math:`\log \bar r = \log \frac1E \sum_e r_e(x, \theta)`; with
normalised members (NRE-A/C, BNRE) the implied posterior
:math:`p(\theta)\,\bar r(x, \theta)` is the uniform mixture of the members'
posteriors, and for NRE-B (each member off by its own :math:`c_e(x)`) the
mixture weighted by :math:`e^{c_e(x)}`.

Because the ensemble is an ordinary :class:`~pymc_sbi.Estimator`, every PyMC
term (:func:`~pymc_sbi.NeuralLikelihood`, :func:`~pymc_sbi.NeuralRatio`,
:func:`~pymc_sbi.NeuralPosterior`), sampler, diagnostic and ``save``/``load``
uses the mixture unchanged. With i.i.d. trials a likelihood term sums
:math:`\log q(x_n \mid \theta)` over trials: each trial's likelihood is the
mixture (the product over trials of mixtures, not a mixture of products).

Why ensembles: averaging members reduces the variance of the estimate (deep
ensembles, Lakshminarayanan et al. 2017), makes a surrogate more
conservative in regions where single networks are over-confident (Hermans et
al. 2022), and the members' *disagreement*
(:meth:`~pymc_sbi.Estimator.disagreement`, :func:`disagreement_summary`) is a
cheap epistemic-uncertainty diagnostic: it grows where the simulations do not
constrain the networks.

References
----------
B. Lakshminarayanan, A. Pritzel and C. Blundell, "Simple and scalable predictive
uncertainty estimation using deep ensembles", NeurIPS 2017, arXiv:1612.01474.

J. Hermans, A. Delaunoy, F. Rozet, A. Wehenkel, V. Begy and G. Louppe, "A trust
crisis in simulation-based inference? Your posterior approximations can be
unfaithful", TMLR 2022, arXiv:2110.06581.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective
from pymc_sbi.runner import Runner
from pymc_sbi.simulate import Simulations
from pymc_sbi.training import make_optimizer, run_epoch, train_validation_split

__all__ = ["disagreement_summary", "fit_ensemble", "select_members"]


def select_members(mask, new, old):
    """Per member, ``new`` where ``mask`` (shape ``(E,)``) is true and ``old`` elsewhere."""
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(jnp.reshape(mask, (-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(pick, new, old)


def _epoch_fn(objective: Objective, batch_size: int):
    """One jitted epoch of every member: train, validate, freeze the inactive ones.

    Member ``e`` follows :func:`pymc_sbi.fit`'s per-epoch schedule with its own
    loop key: ``k_loop, k_epoch, k_eval = split(k_loop, 3)``.
    """

    def member(k_loop, state, train, val):
        k_loop, k_epoch, k_eval = jax.random.split(k_loop, 3)
        new, metrics = run_epoch(objective.step, batch_size, k_epoch, state, train)
        val_loss = objective.evaluate(k_eval, new, val)["loss"]
        return k_loop, new, metrics["loss"], val_loss

    @jax.jit
    def epoch(keys, state, active, train, val):
        keys, new, train_loss, val_loss = jax.vmap(member, in_axes=(0, 0, None, None))(
            keys, state, train, val
        )
        keep = active & jnp.isfinite(train_loss) & jnp.isfinite(val_loss)
        return keys, select_members(keep, new, state), train_loss, val_loss

    return epoch


def fit_ensemble(
    objective: Objective,
    simulations: Simulations,
    members: int = 5,
    seed: int = 0,
    *,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    batch_size: int = 200,
    validation_fraction: float = 0.1,
    max_epochs: int = 1000,
    patience: int = 20,
    clip_norm: float | None = 5.0,
    progress: bool = True,
) -> Estimator:
    r"""Train an ensemble of ``members`` independent estimators with one vmapped program.

    Parameters
    ----------
    objective
        Any objective, e.g. ``ps.nle(ps.nn.nsf())``.
    simulations
        Output of :func:`pymc_sbi.simulate`.
    members
        Number of members :math:`E`.
    seed
        Seeds everything: same seed, same ensemble.
    optimizer, learning_rate, batch_size, validation_fraction
        As in :func:`pymc_sbi.fit`.
    max_epochs, patience, clip_norm, progress
        As in :func:`pymc_sbi.fit` (``patience`` applies to each member).

    Returns
    -------
    Estimator
        With ``members=E``: ``log_prob`` (or ``log_ratio``) is the log-mean-exp
        over members, ``sample`` draws from the mixture (module docstring).

    Notes
    -----
    **Recipe.** As :func:`pymc_sbi.fit`, with ``k_split, k_init, k_loop =
    split(key(seed), 3)``: one training/validation split and one z-scoring for
    all members; member ``e`` is initialised with ``split(k_init, E)[e]`` and
    shuffles and steps with its own loop key ``split(k_loop, E)[e]``, following
    ``fit``'s per-epoch schedule. All members' epochs run as one jitted
    ``jax.vmap`` of ``fit``'s compiled epoch, so ``E`` members cost far less
    than ``E`` fits (``python -m pymc_sbi.benchmarks ensemble``).

    **Early stopping is per member.** Each member keeps the parameters of its
    own best validation loss and stops -- its parameters are frozen from then
    on -- after ``patience`` epochs without improvement (or at its first
    non-finite loss, with a warning), exactly as it would in its own ``fit``;
    training ends when every member has stopped or at ``max_epochs``. (Stopping
    on the mean validation loss would let an over-fitting member ride on the
    others' improvement.) Stopped members still go through the vmapped
    computation; their updates are discarded.

    ``history`` holds per-member lists (``train_loss``/``val_loss`` per epoch
    while the member trained, ``member_best_epoch``, ``member_best_val_loss``,
    ``member_epochs``, ``member_stop_reason``) and the summaries ``epochs``
    (epochs run), ``best_val_loss`` (mean over members of their best),
    ``stop_reason`` and ``train_seconds``.

    Raises
    ------
    FloatingPointError
        If some member's loss is non-finite from its first epoch.
    """
    e = int(members)
    if e < 1:
        raise ValueError(f"members must be >= 1, got {members}.")
    if len(simulations) < 2:
        raise ValueError("Need at least 2 simulations to train.")
    t0 = time.perf_counter()
    k_split, k_init, k_loop = jax.random.split(jax.random.key(seed), 3)
    train, val = train_validation_split(k_split, simulations.as_batch(), validation_fraction)
    if validation_fraction == 0:
        val = train
    tx = make_optimizer(optimizer, learning_rate, clip_norm)
    runner = Runner(objective, tx, batch_size=batch_size, members=e)
    state = runner.init(k_init, train)
    keys = runner.member_keys(k_loop)
    epoch_fn = _epoch_fn(objective, int(batch_size))
    select = jax.jit(select_members)

    best_state = state
    best_loss = np.full(e, np.inf)
    best_epoch = np.full(e, -1)
    active = np.ones(e, bool)
    reasons = ["max_epochs"] * e
    train_hist: list[list[float]] = [[] for _ in range(e)]
    val_hist: list[list[float]] = [[] for _ in range(e)]
    epochs = 0
    bar = tqdm(range(max_epochs), desc=f"fit_ensemble {objective.kind} x{e}", disable=not progress)
    for epoch in bar:
        keys, state, tl, vl = epoch_fn(keys, state, jnp.asarray(active), train, val)
        tl, vl = np.asarray(tl, np.float64), np.asarray(vl, np.float64)
        epochs = epoch + 1
        finite = np.isfinite(tl) & np.isfinite(vl)
        for m in np.flatnonzero(active & ~finite):
            warnings.warn(
                f"Non-finite loss of member {m} at epoch {epoch} (train {tl[m]}, validation "
                f"{vl[m]}); that member stopped and keeps the parameters of epoch "
                f"{best_epoch[m]} (its best validation loss).",
                RuntimeWarning,
                stacklevel=2,
            )
            reasons[m] = "non_finite_loss"
        active &= finite
        for m in np.flatnonzero(active):
            train_hist[m].append(float(tl[m]))
            val_hist[m].append(float(vl[m]))
        improved = active & (vl < best_loss)
        if improved.any():
            best_state = select(jnp.asarray(improved), state, best_state)
            best_loss = np.where(improved, vl, best_loss)
            best_epoch = np.where(improved, epoch, best_epoch)
        patience_over = active & (epoch - best_epoch >= patience)
        for m in np.flatnonzero(patience_over):
            reasons[m] = "early_stopping"
        active &= ~patience_over
        bar.set_postfix(
            val=f"{np.mean(vl[finite]) if finite.any() else np.nan:.3f}", active=int(active.sum())
        )
        if not active.any():
            break
    bar.close()
    if np.any(best_epoch < 0):
        bad = np.flatnonzero(best_epoch < 0).tolist()
        raise FloatingPointError(
            f"The loss of member(s) {bad} was non-finite from the first epoch; nothing was "
            "learned. Check the simulations for extreme values or lower the learning rate."
        )
    n_train = int(next(iter(train.values())).shape[0])
    history: dict[str, Any] = {
        "train_loss": train_hist,
        "val_loss": val_hist,
        "epochs": epochs,
        "best_val_loss": float(np.mean(best_loss)),
        "stop_reason": "max_epochs" if "max_epochs" in reasons else "all_members_stopped",
        "member_best_epoch": best_epoch.tolist(),
        "member_best_val_loss": best_loss.tolist(),
        "member_epochs": [len(h) for h in train_hist],
        "member_stop_reason": reasons,
        "members": e,
        "train_seconds": time.perf_counter() - t0,
        "n_train": n_train,
        "n_val": 0 if validation_fraction == 0 else int(next(iter(val.values())).shape[0]),
    }
    config = {
        "seed": seed,
        "members": e,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "validation_fraction": validation_fraction,
        "max_epochs": max_epochs,
        "patience": patience,
        "clip_norm": clip_norm,
        "custom_optimizer": optimizer is not None,
        "early_stopping": "per_member",
    }
    return runner.estimator(
        best_state, simulations.spec, simulations.x_shape, history=history, config=config
    )


def disagreement_summary(estimator: Estimator, x, theta, covariates=None) -> dict[str, float]:
    r"""Summary of :meth:`~pymc_sbi.Estimator.disagreement` over a set of points.

    Parameters
    ----------
    estimator
        An ensemble estimator (``members`` set).
    x, theta, covariates
        Points, as for :meth:`~pymc_sbi.Estimator.log_prob` (e.g. held-out
        simulations, or the observations with posterior draws).

    Returns
    -------
    dict
        ``mean``, ``median``, ``q90`` and ``max`` of the per-point standard
        deviation over members of :math:`\log q_e` (nats).
    """
    s = np.asarray(estimator.disagreement(x, theta, covariates), np.float64).ravel()
    return {
        "mean": float(np.mean(s)),
        "median": float(np.median(s)),
        "q90": float(np.quantile(s, 0.9)),
        "max": float(np.max(s)),
    }
