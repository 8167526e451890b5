r"""The one training loop, and :func:`fit`, :func:`fit_ensemble` on top of it.

:func:`train_loop` drives an objective's pure ``init`` / ``step`` /
``evaluate`` functions (:class:`~pymc_sbi.objectives.Objective`) with the
options of a :class:`~pymc_sbi.TrainConfig`. It is the loop of :func:`fit`,
:func:`fit_ensemble` and the sequential rounds. Its recipe, reproduced exactly
by a hand-written loop (``docs/custom_training_loop.md``), is::

    k_split, k_init, k_loop = jax.random.split(jax.random.key(seed), 3)
    train, val = train_validation_split(k_split, sims.as_batch(), config.validation_fraction)
    state = objective.init(k_init, train, config.make_optimizer(n_train))
    for epoch in range(config.max_epochs):
        k_loop, k_epoch, k_eval = jax.random.split(k_loop, 3)
        state, _ = run_epoch(objective.step, config.batch_size, k_epoch, state, train)
        val_loss = objective.evaluate(k_eval, state, val)["loss"]
        # keep the parameters of the best val_loss; stop after `patience`
        # epochs without improvement, or at the first non-finite loss

Each epoch, with its validation, runs as one compiled program (a ``lax.scan``
over the mini-batches); the last incomplete mini-batch of the shuffled epoch
is dropped (a different one every epoch), so all batches have one static shape.

**Ensembles** (``members=E``) run the same epoch for every member with
``jax.vmap``: member ``e`` initialises with ``split(k_init, E)[e]`` and loops
with ``split(k_loop, E)[e]``, exactly as its own single run would, and stops
on its own (per-member early stopping; a stopped member's updates are discarded).

**Per-step compilation** (``compile="step"``, used by sequential rounds, whose
training set grows every round): the compiled units are one gradient step
and one evaluation on a batch of fixed shape and the epoch runs in Python, so
nothing recompiles when the number of simulations changes; the validation
loss is computed in fixed-size chunks with one fixed key, so early stopping
sees the network change, not the noise of a stochastic loss.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.seed import as_key
from pymc_sbi.simulation import Simulations
from pymc_sbi.train.config import TrainConfig

__all__ = [
    "DiscreteDataWarning",
    "epoch_batches",
    "fit",
    "fit_ensemble",
    "init_state",
    "run_epoch",
    "select_members",
    "take",
    "train_loop",
    "train_validation_split",
]


def take(batch: dict[str, Any], idx) -> dict[str, Any]:
    """Rows ``idx`` of every array in ``batch``."""
    return {k: v[idx] for k, v in batch.items()}


def _num_rows(batch) -> int:
    return int(next(iter(batch.values())).shape[0])


def train_validation_split(rng_key, batch: dict[str, Any], validation_fraction: float):
    """Shuffle and split a batch into training and validation sets.

    The validation set gets ``max(1, round(fraction * n))`` rows when the
    fraction is positive; with a fraction of 0 it is the training set itself.
    """
    n = _num_rows(batch)
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
    n_val = max(1, round(validation_fraction * n)) if validation_fraction > 0 else 0
    if n - n_val < 1:
        raise ValueError(f"Too few simulations ({n}) to hold out a validation set.")
    perm = np.asarray(jax.random.permutation(rng_key, n))
    data = {k: np.asarray(v) for k, v in batch.items()}  # numpy rows: no gather to compile
    train = jax.tree.map(jnp.asarray, take(data, perm[n_val:]))
    if n_val == 0:
        return train, train
    return train, jax.tree.map(jnp.asarray, take(data, perm[:n_val]))


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
    idx, keys = epoch_batches(rng_key, _num_rows(data), batch_size)

    def body(state, inputs):
        i, key = inputs
        return step(key, state, take(data, i))

    state, metrics = jax.lax.scan(body, state, (idx, keys))
    return state, jax.tree.map(jnp.mean, metrics)


def select_members(mask, new, old):
    """Per member, ``new`` where ``mask`` (shape ``(E,)``) is true and ``old`` elsewhere."""
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(jnp.reshape(mask, (-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

    return jax.tree.map(pick, new, old)


# ------------------------------------------------------------ epoch programs
def _scan_epoch(objective: Objective, batch_size: int, members: int | None):
    """``(k_loop, state, active, train, val) -> (k_loop, state, train_loss, val_loss)``, jitted."""

    def member(k_loop, state, train, val):
        k_loop, k_epoch, k_eval = jax.random.split(k_loop, 3)
        new, metrics = run_epoch(objective.step, batch_size, k_epoch, state, train)
        return k_loop, new, metrics["loss"], objective.evaluate(k_eval, new, val)["loss"]

    if members is None:
        return jax.jit(lambda k, s, active, t, v: member(k, s, t, v))

    @jax.jit
    def epoch(keys, state, active, train, val):
        keys, new, tl, vl = jax.vmap(member, in_axes=(0, 0, None, None))(keys, state, train, val)
        keep = active & jnp.isfinite(tl) & jnp.isfinite(vl)
        return keys, select_members(keep, new, state), tl, vl

    return epoch


@functools.lru_cache(maxsize=32)
def _jitted(fn):
    return jax.jit(fn)


def _chunks(n: int, size: int) -> list[np.ndarray]:
    """Row blocks of ``size`` covering ``0..n-1`` (the last one overlaps the previous)."""
    if n <= size:
        return [np.arange(n)]
    starts = [*range(0, n - size, size), n - size]
    return [np.arange(a, a + size) for a in starts]


def _step_epoch(objective: Objective, batch_size: int, k_eval, train, val):
    """The per-step epoch program of the module docstring (one member)."""
    step, evaluate = _jitted(objective.step), _jitted(objective.evaluate)
    train = {k: np.asarray(v) for k, v in train.items()}
    val = {k: np.asarray(v) for k, v in val.items()}
    n_train = _num_rows(train)
    size = min(int(batch_size), n_train)
    val_chunks = _chunks(_num_rows(val), size)
    val_keys = jax.random.split(k_eval, len(val_chunks))

    def rows(batch, idx):
        return {k: jnp.asarray(v[idx]) for k, v in batch.items()}

    def epoch(k_loop, state, active, _train, _val):
        del active, _train, _val
        k_loop, k_epoch = jax.random.split(k_loop)
        k_perm, k_steps = jax.random.split(k_epoch)
        order = np.asarray(jax.random.permutation(k_perm, n_train))
        n_batches = n_train // size
        keys = jax.random.split(k_steps, n_batches)
        losses = []
        for i in range(n_batches):
            state, metrics = step(keys[i], state, rows(train, order[i * size : (i + 1) * size]))
            losses.append(metrics["loss"])
        val_losses = [
            evaluate(k, state, rows(val, c))["loss"]
            for k, c in zip(val_keys, val_chunks, strict=True)
        ]
        return k_loop, state, jnp.mean(jnp.stack(losses)), jnp.mean(jnp.stack(val_losses))

    return epoch


# ----------------------------------------------------------------- the loop
def init_state(
    objective: Objective,
    train: dict[str, Any],
    config: TrainConfig,
    rng_key,
    *,
    members: int | None = None,
) -> TrainState:
    """A new state: ``objective.init`` with ``config``'s optimizer.

    The z-scoring statistics come from ``train``. An ensemble's member ``e``
    is initialised with ``split(rng_key, members)[e]`` (every leaf then has a
    leading member axis).
    """
    tx = config.make_optimizer(_num_rows(train))
    data = {k: jnp.asarray(v) for k, v in train.items()}
    if members is None:
        return objective.init(rng_key, data, tx)
    keys = jax.random.split(rng_key, int(members))
    return jax.vmap(lambda k: objective.init(k, data, tx))(keys)


def train_loop(
    objective: Objective,
    train: dict[str, Any],
    val: dict[str, Any],
    config: TrainConfig,
    rng_key,
    state: TrainState,
    *,
    members: int | None = None,
    compile: Literal["epoch", "step"] = "epoch",
    eval_key=None,
    progressbar: bool = True,
    desc: str = "fit",
) -> tuple[TrainState, dict[str, Any]]:
    """Train ``objective`` with early stopping: the loop of the module docstring.

    Parameters
    ----------
    objective
        E.g. ``ps.nle(ps.nn.nsf())``.
    train, val
        Training and validation batches (``{"theta": (n, d), "x": (n, ...), ...}``).
    config
        The :class:`~pymc_sbi.TrainConfig`.
    rng_key
        The loop key (``k_loop`` of the module docstring); an ensemble's member
        ``e`` loops with ``split(rng_key, members)[e]``.
    state
        The state to start from (:func:`init_state`, or a previous run's, its
        optimizer included).
    members
        ``None`` for one network, ``E`` for a vmapped ensemble.
    compile
        ``"epoch"``: one compiled program per epoch; ``"step"``: compiled steps
        (one member only; see the module docstring).
    eval_key
        ``compile="step"``: the fixed key of every validation loss (default:
        split from ``rng_key``).
    progressbar
        Show a progress bar; it ends at the last epoch run.
    desc
        The progress bar's label.

    Returns
    -------
    (TrainState, dict)
        The state of the best validation loss (per member) and the history:
        ``train_loss``/``val_loss`` per epoch (per member, for an ensemble),
        ``best_epoch``, ``best_val_loss``, ``epochs``, ``stop_reason``,
        ``train_seconds``, ``n_train``, ``n_val``; ensembles add
        ``member_best_epoch``, ``member_best_val_loss``, ``member_epochs``,
        ``member_stop_reason`` and ``members``.

    Raises
    ------
    FloatingPointError
        If the loss (of some member) is non-finite from the first epoch.
    """
    t0 = time.perf_counter()
    e = 1 if members is None else int(members)
    k_loop = rng_key
    if compile == "step":
        if members is not None:
            raise ValueError("compile='step' trains one member; use compile='epoch' for ensembles.")
        if eval_key is None:
            k_loop, eval_key = jax.random.split(k_loop)
        epoch_fn = _step_epoch(objective, config.batch_size, eval_key, train, val)
    else:
        epoch_fn = _scan_epoch(objective, int(config.batch_size), members)
    keys = k_loop if members is None else jax.random.split(k_loop, e)
    select = _jitted(select_members)

    best_state = state
    best_loss = np.full(e, np.inf)
    best_epoch = np.full(e, -1)
    active = np.ones(e, bool)
    reasons = ["max_epochs"] * e
    train_hist: list[list[float]] = [[] for _ in range(e)]
    val_hist: list[list[float]] = [[] for _ in range(e)]
    patience = math.inf if config.patience is None else config.patience
    epochs = 0
    bar = tqdm(total=config.max_epochs, desc=desc, disable=not progressbar)
    for epoch in range(config.max_epochs):
        keys, new_state, tl, vl = epoch_fn(keys, state, jnp.asarray(active), train, val)
        tl = np.atleast_1d(np.asarray(tl, np.float64))
        vl = np.atleast_1d(np.asarray(vl, np.float64))
        epochs = epoch + 1
        finite = np.isfinite(tl) & np.isfinite(vl)
        for m in np.flatnonzero(active & ~finite):
            who = "" if members is None else f" of member {m}"
            warnings.warn(
                f"Non-finite loss{who} at epoch {epoch} (train {tl[m]}, validation {vl[m]}); "
                f"training{who} stopped and the parameters of epoch {best_epoch[m]} (best "
                "validation loss) were kept.",
                RuntimeWarning,
                stacklevel=3,
            )
            reasons[m] = "non_finite_loss"
        active &= finite
        if members is None and not active[0]:
            break  # one network keeps its last finite state
        state = new_state  # an ensemble's epoch program already froze inactive members
        for m in np.flatnonzero(active):
            train_hist[m].append(float(tl[m]))
            val_hist[m].append(float(vl[m]))
        improved = active & (vl < best_loss)
        if improved.any():
            best_state = (
                state if members is None else select(jnp.asarray(improved), state, best_state)
            )
            best_loss = np.where(improved, vl, best_loss)
            best_epoch = np.where(improved, epoch, best_epoch)
        over = active & (epoch - best_epoch >= patience)
        for m in np.flatnonzero(over):
            reasons[m] = "early_stopping"
        active &= ~over
        bar.update(1)
        bar.set_postfix(
            val=f"{np.mean(vl[finite]) if finite.any() else np.nan:.3f}",
            best=int(best_epoch.max()) if members is None else int(active.sum()),
        )
        if not active.any():
            break
    bar.total = epochs  # an early stop ends the bar at the last epoch run, not at max_epochs
    bar.refresh()
    bar.close()
    if np.any(best_epoch < 0):
        bad = np.flatnonzero(best_epoch < 0).tolist()
        who = "The loss" if members is None else f"The loss of member(s) {bad}"
        raise FloatingPointError(
            f"{who} was non-finite from the first epoch; nothing was learned. Check the "
            "simulations for extreme values or lower the learning rate."
        )
    history: dict[str, Any] = {
        "epochs": epochs,
        "train_seconds": time.perf_counter() - t0,
        "n_train": _num_rows(train),
        "n_val": 0 if config.validation_fraction == 0 else _num_rows(val),
    }
    if members is None:
        history.update(
            train_loss=train_hist[0],
            val_loss=val_hist[0],
            best_epoch=int(best_epoch[0]),
            best_val_loss=float(best_loss[0]),
            epochs=len(train_hist[0]),
            stop_reason=reasons[0],
        )
    else:
        history.update(
            train_loss=train_hist,
            val_loss=val_hist,
            best_val_loss=float(np.mean(best_loss)),
            stop_reason="max_epochs" if "max_epochs" in reasons else "all_members_stopped",
            member_best_epoch=best_epoch.tolist(),
            member_best_val_loss=best_loss.tolist(),
            member_epochs=[len(h) for h in train_hist],
            member_stop_reason=reasons,
            members=e,
        )
    return best_state, history


# ---------------------------------------------------------------- one-shot
class DiscreteDataWarning(UserWarning):
    """A continuous density is being fitted to integer-valued data."""


def _check_discrete_data(objective: Objective, simulations: Simulations) -> None:
    """Warn when an NLE flow is fitted to integer-valued ``x`` (counts, spike sums).

    A continuous density fitted to integers concentrates its mass on the
    integers: the training loss keeps falling without limit and the surrogate's
    log density at the data is meaningless. Dequantise (add ``U(0, 1)`` noise
    in the simulator and model ``x + u``) or model the discrete part with MNLE.
    """
    if objective.kind != "nle":
        return
    x = np.asarray(simulations.x)
    if np.issubdtype(x.dtype, np.integer) or (x.size and np.all(x == np.round(x))):
        warnings.warn(
            f"Every simulated x is integer-valued ({x.shape[0]} simulations of shape "
            f"{x.shape[1:]}), and NLE fits a continuous density to it: the density collapses "
            "onto the integers. Dequantise (simulate x + U(0, 1) noise) or use ps.mnle for "
            "discrete parts; see docs/troubleshooting.md.",
            DiscreteDataWarning,
            stacklevel=4,
        )


def _train(objective, simulations, config, seed, members, progressbar, desc) -> Estimator:
    """Split, train (:func:`train_loop`) and wrap the result as an :class:`Estimator`."""
    if not isinstance(simulations, Simulations):
        raise TypeError(
            "simulations must be a pymc_sbi.Simulations (from ps.simulate), got "
            f"{type(simulations).__name__}."
        )
    if len(simulations) < 2:
        raise ValueError(f"Need at least 2 simulations to train, got {len(simulations)}.")
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a pymc_sbi.TrainConfig, got {type(config).__name__}.")
    _check_discrete_data(objective, simulations)
    k_split, k_init, k_loop = jax.random.split(as_key(seed), 3)
    train, val = train_validation_split(k_split, simulations.as_batch(), config.validation_fraction)
    state = init_state(objective, train, config, k_init, members=members)
    state, history = train_loop(
        objective,
        train,
        val,
        config,
        k_loop,
        state,
        members=members,
        progressbar=progressbar,
        desc=desc,
    )
    record = config.to_dict()
    record["seed"] = int(seed) if not hasattr(seed, "dtype") else "key"
    if members is not None:
        record.update(members=int(members), early_stopping="per_member")
    return Estimator.from_state(
        objective.kind,
        state,
        spec=simulations.spec,
        x_shape=simulations.x_shape,
        history=history,
        config=record,
        members=members,
    )


def fit(
    objective: Objective,
    simulations: Simulations,
    config: TrainConfig | None = None,
    *,
    seed=0,
    progressbar: bool = True,
) -> Estimator:
    """Train an objective on simulations and return the trained :class:`~pymc_sbi.Estimator`.

    Parameters
    ----------
    objective
        E.g. ``ps.nle(ps.nn.nsf())``.
    simulations
        Output of :func:`pymc_sbi.simulation`.
    config
        A :class:`~pymc_sbi.TrainConfig` (default: ``TrainConfig()``, sbi's
        recipe), or a named recipe (:func:`~pymc_sbi.cosine_recipe`,
        :func:`~pymc_sbi.ratio_recipe`).
    seed
        An int or a JAX key; seeds the split, initialisation and shuffling
        (``k_split, k_init, k_loop = split(key(seed), 3)``): same seed, same
        estimator.
    progressbar
        Show a progress bar with the losses.

    Returns
    -------
    Estimator
        With ``history`` holding per-epoch ``train_loss``/``val_loss``, ``best_epoch``,
        ``epochs``, ``stop_reason`` and ``train_seconds``, and ``config`` the recipe.

    Notes
    -----
    A non-finite training or validation loss stops training with a warning and
    returns the best parameters seen so far (never the corrupted ones).
    """
    return _train(objective, simulations, config, seed, None, progressbar, f"fit {objective.kind}")


def fit_ensemble(
    objective: Objective,
    simulations: Simulations,
    config: TrainConfig | None = None,
    *,
    num_members: int = 5,
    seed=0,
    progressbar: bool = True,
) -> Estimator:
    r"""Train an ensemble of ``num_members`` independent estimators as one vmapped program.

    The result is the uniform mixture of its members,

    .. math::

        q(x \mid \theta) = \frac1E \sum_{e=1}^E q_e(x \mid \theta)

    (see :class:`~pymc_sbi.Estimator` for ratios and posteriors).

    Parameters
    ----------
    objective, simulations, config, seed, progressbar
        As in :func:`fit`; ``config.patience`` applies to each member.
    num_members
        Number of members :math:`E`.

    Returns
    -------
    Estimator
        With ``members=E``.

    Notes
    -----
    **Recipe.** As :func:`fit`: one training/validation split and one z-scoring
    for all members; member ``e`` initialises with ``split(k_init, E)[e]`` and
    shuffles and steps with ``split(k_loop, E)[e]`` (:func:`train_loop`). All
    members' epochs run as one jitted ``jax.vmap`` of ``fit``'s epoch.

    **Early stopping is per member.** Each member keeps the parameters of its
    own best validation loss and stops -- its parameters frozen from then on --
    after ``patience`` epochs without improvement (or at its first non-finite
    loss, with a warning). Stopping on the mean validation loss would let an
    over-fitting member ride on the others' improvement.

    ``history`` holds per-member lists (``train_loss``/``val_loss``,
    ``member_best_epoch``, ``member_best_val_loss``, ``member_epochs``,
    ``member_stop_reason``) and the summaries ``epochs``, ``best_val_loss``
    (mean over members), ``stop_reason`` and ``train_seconds``.

    Raises
    ------
    FloatingPointError
        If some member's loss is non-finite from its first epoch.
    """
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"num_members must be an integer >= 1, got {num_members!r}.")
    desc = f"fit_ensemble {objective.kind} x{num_members}"
    return _train(objective, simulations, config, seed, num_members, progressbar, desc)
