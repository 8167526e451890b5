r"""The runner layer: ``init`` / ``update`` / ``run`` over an objective, like ``numpyro``'s SVI.

Between an objective's pure functions (:class:`~pymc_sbi.objectives.Objective`:
``init`` / ``step`` / ``evaluate`` on a :class:`~pymc_sbi.objectives.TrainState`)
and the one-shot :func:`pymc_sbi.fit` sits :class:`Runner`::

    runner = ps.train.Runner(ps.nle(ps.nn.maf()), batch_size=200)  # Adam 5e-4, clipped
    state = runner.init(rng_key, data)                   # -> TrainState
    state, metrics = runner.update(rng_key, state, batch)  # one jitted gradient step
    result = runner.run(rng_key, data, num_steps=5_000)  # RunResult(state, losses, metrics)
    estimator = runner.estimator(result.state, sims.spec, sims.x_shape)

``run`` compiles the whole training run -- every step of every epoch -- into
one program: a single ``lax.scan`` over all steps, which redraws the
shuffled mini-batches at the first step of every epoch. There is no Python
loop per step, so small networks train at the speed of the
compiled step rather than of Python dispatch. No early stopping happens inside
``run``; :func:`pymc_sbi.fit` and :func:`pymc_sbi.fit_ensemble` add it.

**Key schedule** (what a hand-written loop must do to reproduce ``run``):
with ``k_init, k_loop = split(rng_key)`` (``k_init`` only when ``run`` also
initialises), ``n_b = max(n // batch_size, 1)`` mini-batches per epoch and
``n_e = ceil(num_steps / n_b)`` epochs, epoch ``e`` uses
``idx, keys = epoch_batches(split(k_loop, n_e)[e], n, batch_size)`` and step
``i`` of it is ``update(keys[i], state, take(data, idx[i]))`` (the last epoch
stops after the remaining steps).

**Ensembles.** ``Runner(..., members=E)`` trains ``E`` independent members
with ``jax.vmap``: every leaf of the state gets a leading member axis, and one
compiled step updates all members at once. Member ``e`` is *exactly* the
single-member runner seeded with ``split(rng_key, E)[e]`` (in :meth:`Runner.run`,
:meth:`Runner.init` and :meth:`Runner.update` alike) -- its own initialisation,
its own shuffling and its own step keys; the data (and so the z-scoring
statistics) are shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.spec import ParamSpec
from pymc_sbi.train.config import TrainConfig, steps_per_epoch
from pymc_sbi.train.loop import epoch_batches

__all__ = ["RunResult", "Runner"]


class RunResult(NamedTuple):
    """What :meth:`Runner.run` returns.

    Attributes
    ----------
    state
        The final :class:`~pymc_sbi.objectives.TrainState` (leaves with a leading
        member axis for an ensemble).
    losses
        Training loss of every step: ``(num_steps,)``, or ``(members, num_steps)``.
    metrics
        Every metric the objective's ``step`` returns, shaped like ``losses``.
    """

    state: TrainState
    losses: jax.Array
    metrics: dict[str, jax.Array]


def _num_rows(data: Mapping[str, Any]) -> int:
    return int(next(iter(data.values())).shape[0])


def _run_single(step, batch_size: int, num_steps: int, rng_key, state, data):
    """``num_steps`` steps of one member (the key schedule of the module docstring).

    One ``lax.scan`` over all steps: the step body is compiled once. The
    mini-batch indices and step keys of the current epoch are carried along
    and redrawn (``epoch_batches``) at the first step of every epoch.
    """
    n = _num_rows(data)
    per_epoch = steps_per_epoch(n, batch_size)
    epoch_keys = jax.random.split(rng_key, -(-int(num_steps) // per_epoch))

    def body(carry, t):
        state, idx, keys = carry
        e, i = t // per_epoch, t % per_epoch
        idx, keys = jax.lax.cond(
            i == 0,
            lambda: epoch_batches(epoch_keys[e], n, batch_size),
            lambda: (idx, keys),
        )
        state, metrics = step(keys[i], state, {k: v[idx[i]] for k, v in data.items()})
        return (state, idx, keys), metrics

    idx = jax.eval_shape(lambda k: epoch_batches(k, n, batch_size)[0], epoch_keys[0])
    carry = (state, jnp.zeros(idx.shape, idx.dtype), jax.random.split(epoch_keys[0], per_epoch))
    (state, _, _), metrics = jax.lax.scan(body, carry, jnp.arange(int(num_steps)))
    return state, metrics


@dataclass(frozen=True, eq=False)
class Runner:
    r"""``init`` / ``update`` / ``run`` over an objective (one network or a vmapped ensemble).

    Parameters
    ----------
    objective
        E.g. ``ps.nle(ps.nn.maf())``; any :class:`~pymc_sbi.objectives.Objective`
        whose ``step`` takes a batch dict (NLE, NPE, NRE-A/B/C, BNRE, MNLE, SNPE-B/C
        with their ``log_prior``/``log_proposal`` columns, covariates).
    optimizer
        Any ``optax.GradientTransformation``; default ``TrainConfig().make_optimizer(n)``
        (Adam 5e-4 after global-norm clipping at 5).
    batch_size
        Mini-batch size of :meth:`run` (``min(batch_size, n)``; the last incomplete
        mini-batch of each shuffled epoch is dropped).
    members
        ``None`` for one network; ``E`` for an ensemble of ``E`` independent
        members trained with ``jax.vmap`` (see the module docstring).

    Notes
    -----
    Every method is jitted once per runner and input shapes. ``run`` of an
    ensemble is a single compiled program whose step updates all members, so
    its cost grows with the arithmetic of ``E`` networks but pays the per-step
    overhead (scan iteration, optimizer bookkeeping, small kernels) once.
    """

    objective: Objective
    optimizer: optax.GradientTransformation | None = None
    batch_size: int = 200
    members: int | None = None
    _jit: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.members is not None and int(self.members) < 1:
            raise ValueError(f"members must be a positive integer or None, got {self.members}.")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}.")
        if self.optimizer is None:
            object.__setattr__(self, "optimizer", TrainConfig().make_optimizer(0))

    @property
    def kind(self) -> str:
        """The objective's kind (``"nle"``, ``"npe"``, ``"nre"``, ``"mnle"``)."""
        return self.objective.kind

    def member_keys(self, rng_key) -> jax.Array:
        """``split(rng_key, members)``: the key of each member (ensembles only)."""
        return jax.random.split(rng_key, int(self.members))

    def _cached(self, name, build):
        if name not in self._jit:
            self._jit[name] = build()
        return self._jit[name]

    # ---------------------------------------------------------------- init
    def init(self, rng_key, data: Mapping[str, Any]) -> TrainState:
        """Initial state: ``objective.init(rng_key, data, optimizer)``.

        ``data`` is the whole training set (the z-scoring statistics come from it).
        For an ensemble, member ``e`` is initialised with ``member_keys(rng_key)[e]``
        (``jax.vmap`` over the keys, the data closed over), so every leaf of the
        state has a leading member axis.
        """
        if self.members is None:
            return self.objective.init(rng_key, data, self.optimizer)
        init_one = lambda key: self.objective.init(key, data, self.optimizer)
        return jax.vmap(init_one)(self.member_keys(rng_key))

    # -------------------------------------------------------------- update
    def _step(self):
        def build():
            if self.members is None:
                return jax.jit(self.objective.step)
            return jax.jit(jax.vmap(self.objective.step, in_axes=(0, 0, None)))

        return self._cached("step", build)

    def update(self, rng_key, state: TrainState, batch: Mapping[str, Any]):
        """One jitted gradient step: ``objective.step(rng_key, state, batch)``.

        For an ensemble every member takes a step on the same ``batch``, member
        ``e`` with key ``member_keys(rng_key)[e]``; the metrics get a leading
        member axis. (Per-member batches: ``jax.vmap(objective.step)`` directly.)
        """
        if self.members is None:
            return self._step()(rng_key, state, batch)
        return self._step()(self.member_keys(rng_key), state, batch)

    def evaluate(self, rng_key, state: TrainState, batch: Mapping[str, Any]) -> dict:
        """Jitted ``objective.evaluate`` (per member, keys as :meth:`update`, for an ensemble)."""

        def build():
            if self.members is None:
                return jax.jit(self.objective.evaluate)
            return jax.jit(jax.vmap(self.objective.evaluate, in_axes=(0, 0, None)))

        fn = self._cached("evaluate", build)
        return fn(rng_key if self.members is None else self.member_keys(rng_key), state, batch)

    # ----------------------------------------------------------------- run
    def _run_fn(self):
        def build():
            def run(rng_key, state, data, num_steps):
                one = partial(_run_single, self.objective.step, int(self.batch_size), num_steps)
                if self.members is None:
                    return one(rng_key, state, data)
                # rng_key: one loop key per member; metrics (members, num_steps)
                return jax.vmap(one, in_axes=(0, 0, None))(rng_key, state, data)

            return jax.jit(run, static_argnums=3)

        return self._cached("run", build)

    def run(
        self,
        rng_key,
        data: Mapping[str, Any],
        num_steps: int | None = None,
        *,
        num_epochs: int | None = None,
        init_state: TrainState | None = None,
    ) -> RunResult:
        """Train for a fixed number of steps as one compiled ``lax.scan``.

        Parameters
        ----------
        rng_key
            JAX PRNG key. Without ``init_state``, ``k_init, k_loop = split(rng_key)``:
            ``k_init`` initialises (:meth:`init`) and ``k_loop`` drives the shuffling
            and step keys; with ``init_state``, ``rng_key`` is ``k_loop`` itself.
            An ensemble first splits ``rng_key`` into one key per member
            (:meth:`member_keys`) and treats each as above.
        data
            The training set, a batch dict ``{"theta": (n, d), "x": (n, ...), ...}``.
        num_steps
            Gradient steps (per member).
        num_epochs
            Alternatively, whole epochs (``num_epochs * steps_per_epoch(n, batch_size)``
            steps). Give exactly one of ``num_steps`` and ``num_epochs``.
        init_state
            Continue from this state instead of initialising.

        Returns
        -------
        RunResult
            Final state, per-step losses and metrics.
        """
        if (num_steps is None) == (num_epochs is None):
            raise ValueError("Give exactly one of num_steps and num_epochs.")
        data = {k: jnp.asarray(v) for k, v in data.items()}
        if num_steps is None:
            num_steps = int(num_epochs) * steps_per_epoch(_num_rows(data), self.batch_size)
        if int(num_steps) < 1:
            raise ValueError(f"num_steps must be positive, got {num_steps}.")
        if self.members is None:
            if init_state is None:
                k_init, rng_key = jax.random.split(rng_key)
                init_state = self.objective.init(k_init, data, self.optimizer)
        else:  # member e: exactly the single-member run with key split(rng_key, E)[e]
            rng_key = self.member_keys(rng_key)
            if init_state is None:
                pairs = jax.vmap(jax.random.split)(rng_key)  # (E, 2)
                k_init, rng_key = pairs[:, 0], pairs[:, 1]
                init_one = lambda key: self.objective.init(key, data, self.optimizer)
                init_state = jax.vmap(init_one)(k_init)
        state, metrics = self._run_fn()(rng_key, init_state, data, int(num_steps))
        return RunResult(state=state, losses=metrics["loss"], metrics=metrics)

    # ----------------------------------------------------------- estimator
    def estimator(
        self,
        state: TrainState,
        spec: ParamSpec,
        x_shape,
        history: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Estimator:
        """The trained :class:`~pymc_sbi.Estimator` (an ensemble one for ``members``)."""
        return Estimator.from_state(
            self.kind,
            state,
            spec=spec,
            x_shape=x_shape,
            history=history,
            config=config,
            members=self.members,
        )
