"""Train an objective: the one-shot :func:`fit` and the pieces it is made of.

:func:`fit` is a thin driver over an objective's pure ``init`` / ``step`` /
``evaluate`` functions. Its recipe, reproduced exactly by a hand-written loop
(see ``docs/custom_training_loop.md``), is::

    k_split, k_init, k_loop = jax.random.split(jax.random.key(seed), 3)
    train, val = train_validation_split(k_split, sims.as_batch(), validation_fraction)
    tx = make_optimizer(optimizer, learning_rate, clip_norm)
    state = objective.init(k_init, train, tx)
    for epoch in range(max_epochs):
        k_loop, k_epoch, k_eval = jax.random.split(k_loop, 3)
        idx, step_keys = epoch_batches(k_epoch, n_train, batch_size)
        for i in range(len(idx)):
            state, _ = objective.step(step_keys[i], state, take(train, idx[i]))
        val_loss = objective.evaluate(k_eval, state, val)["loss"]
        # keep the parameters of the best val_loss; stop after `patience`
        # epochs without improvement, or at the first non-finite loss

Each epoch runs as one compiled ``lax.scan`` over its mini-batches; the last
incomplete mini-batch of the shuffled epoch is dropped (a different one every
epoch), so all batches have one static shape.
"""

from __future__ import annotations

import math
import time
import warnings
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.simulate import Simulations

__all__ = [
    "early_stopping",
    "epoch_batches",
    "fit",
    "make_optimizer",
    "run_epoch",
    "take",
    "train_validation_split",
]


def make_optimizer(
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 5e-4,
    clip_norm: float | None = 5.0,
) -> optax.GradientTransformation:
    """``optimizer`` (default Adam at ``learning_rate``) after global-norm clipping."""
    tx = optimizer if optimizer is not None else optax.adam(learning_rate)
    if clip_norm is None:
        return tx
    return optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def take(batch: dict[str, Any], idx) -> dict[str, Any]:
    """Rows ``idx`` of every array in ``batch``."""
    return {k: v[idx] for k, v in batch.items()}


def train_validation_split(rng_key, batch: dict[str, Any], validation_fraction: float):
    """Shuffle and split a batch into training and validation sets.

    The validation set gets ``max(1, round(fraction * n))`` rows when the
    fraction is positive (none when it is 0).
    """
    n = int(next(iter(batch.values())).shape[0])
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    n_val = max(1, round(validation_fraction * n)) if validation_fraction > 0 else 0
    if n - n_val < 1:
        raise ValueError(f"Too few simulations ({n}) to hold out a validation set.")
    perm = np.asarray(jax.random.permutation(rng_key, n))
    data = {k: np.asarray(v) for k, v in batch.items()}  # numpy rows: no gather to compile
    train, val = take(data, perm[n_val:]), take(data, perm[:n_val])
    return jax.tree.map(jnp.asarray, train), jax.tree.map(jnp.asarray, val)


def epoch_batches(rng_key, n: int, batch_size: int):
    """Mini-batch indices ``(n_batches, B)`` of one shuffled epoch, and one key per step."""
    k_perm, k_steps = jax.random.split(rng_key)
    size = min(int(batch_size), int(n))
    n_batches = max(int(n) // size, 1)
    perm = jax.random.permutation(k_perm, n)
    return perm[: n_batches * size].reshape(n_batches, size), jax.random.split(k_steps, n_batches)


def run_epoch(step, batch_size: int, rng_key, state: TrainState, data: dict[str, Any]):
    """One epoch of ``step`` over shuffled mini-batches, as a ``lax.scan``.

    Returns the new state and the mean of each metric over the epoch.
    """
    n = next(iter(data.values())).shape[0]
    idx, keys = epoch_batches(rng_key, n, batch_size)

    def body(state, inputs):
        i, key = inputs
        return step(key, state, take(data, i))

    state, metrics = jax.lax.scan(body, state, (idx, keys))
    return state, jax.tree.map(jnp.mean, metrics)


def _epoch_and_validation(
    objective: Objective, batch_size: int, k_epoch, k_eval, state, train, val
):
    """One epoch and the validation loss after it, as one program (one compilation)."""
    state, metrics = run_epoch(objective.step, batch_size, k_epoch, state, train)
    return state, metrics["loss"], objective.evaluate(k_eval, state, val)["loss"]


def early_stopping(
    one_epoch, state, max_epochs: int, patience: int, *, progress: bool = True, desc: str = "fit"
):
    """Run ``one_epoch(state) -> (state, train_loss, val_loss)`` with early stopping.

    Keeps the state of the best validation loss; stops after ``patience`` epochs
    without improvement, or at the first non-finite loss (with a warning, keeping
    the best state). Raises ``FloatingPointError`` if the first epoch is already
    non-finite. Returns the best state and a history dict with ``train_loss``,
    ``val_loss`` (per epoch), ``best_epoch``, ``best_val_loss``, ``epochs`` and
    ``stop_reason``.
    """
    best_state, best_loss, best_epoch = state, math.inf, -1
    train_hist: list[float] = []
    val_hist: list[float] = []
    stop_reason = "max_epochs"
    bar = tqdm(range(max_epochs), desc=desc, disable=not progress)
    for epoch in bar:
        new_state, train_loss, val_loss = one_epoch(state)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            warnings.warn(
                f"Non-finite loss at epoch {epoch} (train {train_loss}, validation "
                f"{val_loss}); training stopped and the parameters of epoch {best_epoch} "
                "(best validation loss) were kept.",
                RuntimeWarning,
                stacklevel=3,
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
    }
    return best_state, history


def fit(
    objective: Objective,
    simulations: Simulations,
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
    """Train an objective on simulations and return the trained :class:`Estimator`.

    Parameters
    ----------
    objective
        E.g. ``pymc_sbi.nle(pymc_sbi.nn.nsf())``.
    simulations
        Output of :func:`pymc_sbi.simulate`.
    seed
        Seeds the split, initialisation and shuffling: same seed, same estimator.
    optimizer
        Any ``optax.GradientTransformation`` (default ``optax.adam(learning_rate)``);
        global-norm clipping at ``clip_norm`` is chained in front of it.
    learning_rate
        Used only for the default Adam.
    batch_size
        Mini-batch size.
    validation_fraction
        Fraction of simulations held out for early stopping.
    max_epochs
        Upper bound on epochs.
    patience
        Stop after this many epochs without a lower validation loss (sbi's
        ``stop_after_epochs``); the parameters of the best epoch are returned.
    clip_norm
        Global gradient-norm clip, ``None`` to disable.
    progress
        Show a progress bar with the losses.

    Returns
    -------
    Estimator
        With ``history`` holding per-epoch ``train_loss``/``val_loss``, ``best_epoch``,
        ``epochs``, ``stop_reason`` and ``train_seconds``.

    Notes
    -----
    A non-finite training or validation loss stops training with a warning and
    returns the best parameters seen so far (never the corrupted ones).
    """
    if len(simulations) < 2:
        raise ValueError("Need at least 2 simulations to train.")
    t0 = time.perf_counter()
    k_split, k_init, k_loop = jax.random.split(jax.random.key(seed), 3)
    train, val = train_validation_split(k_split, simulations.as_batch(), validation_fraction)
    if validation_fraction == 0:
        val = train
    tx = make_optimizer(optimizer, learning_rate, clip_norm)
    state = objective.init(k_init, train, tx)
    epoch_fn = jax.jit(partial(_epoch_and_validation, objective, batch_size))
    keys = {"loop": k_loop}

    def one_epoch(state):
        keys["loop"], k_epoch, k_eval = jax.random.split(keys["loop"], 3)
        new_state, train_loss, val_loss = epoch_fn(k_epoch, k_eval, state, train, val)
        return new_state, float(train_loss), float(val_loss)

    best_state, history = early_stopping(
        one_epoch, state, max_epochs, patience, progress=progress, desc=f"fit {objective.kind}"
    )
    history.update(
        train_seconds=time.perf_counter() - t0,
        n_train=int(next(iter(train.values())).shape[0]),
        n_val=0 if validation_fraction == 0 else int(next(iter(val.values())).shape[0]),
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
    }
    return Estimator.from_state(
        objective.kind,
        best_state,
        spec=simulations.spec,
        x_shape=simulations.x_shape,
        history=history,
        config=config,
    )
