r"""Run many BlackJAX chains on one log-density: warm-up and sampling in one compiled program.

:func:`run_chains` is the pure-function layer under :func:`pymc_sbi.sample`:
give it a JAX ``logdensity_fn`` of a flat vector, a key and an
``(chains, dim)`` array of starting points, pick a kernel by name, and get
back the draws, the per-draw statistics and the tuned parameters. Chains are
``jax.vmap``-ed (a step of all chains is one batched call of the
log-density); warm-up and sampling are one ``lax.scan`` in one ``jax.jit``
program, cached on ``(logdensity_fn, kernel, options, shapes)``: calling
again with the same function and shapes compiles nothing. The log-density
and its gradient appear in that program twice (the starting states and the
step): the end of an adaptation window moves the states to the new
preconditioner (:func:`~pymc_sbi.samplers.adaptation.rescale_states`)
instead of re-evaluating them, which is what keeps compilation short.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.samplers import adaptation as adapt
from pymc_sbi.samplers.kernels import get_kernel

__all__ = ["ChainResult", "TunedParameters", "run_chains"]


class TunedParameters(NamedTuple):
    """What the warm-up found.

    Attributes
    ----------
    param
        The kernel's tuned scalar (step size, RMH scale, slice width).
    scale
        The preconditioner ``L``: ``(dim,)`` standard deviations or a ``(dim, dim)``
        lower-triangular factor, ``z = L u``.
    """

    param: jax.Array
    scale: jax.Array


class ChainResult(NamedTuple):
    """Output of :func:`run_chains`.

    Attributes
    ----------
    positions
        ``(chains, draws, dim)`` draws of ``z``.
    sample_stats
        Dict of ``(chains, draws)`` arrays (``lp``, ``acceptance_rate``, ...).
    tuned
        :class:`TunedParameters`.
    warmup_acceptance
        Mean acceptance over chains in the final fast buffer of the warm-up
        (NaN for kernels without one).
    """

    positions: jax.Array
    sample_stats: dict[str, jax.Array]
    tuned: TunedParameters
    warmup_acceptance: jax.Array


class _Config(NamedTuple):
    """Static (hashable) configuration: part of the jit cache key."""

    kernel: str
    options: tuple[tuple[str, Any], ...]
    target_accept: float | None
    dense: bool
    progressbar: bool


def _preconditioned(logdensity_fn: Callable, scale: jax.Array) -> Callable:
    def logdensity_u(u):
        return logdensity_fn(adapt.to_z(scale, u))

    return logdensity_u


def _progress(total: int, label: str) -> Callable[[jax.Array], None]:
    from tqdm.auto import tqdm

    bar: dict[str, Any] = {}
    every = max(1, total // 50)

    def tick(i) -> None:
        i = int(i)
        if i == 0:
            bar["bar"] = tqdm(total=total, desc=label, leave=False)
        if (i + 1) % every == 0 or i + 1 == total:
            b = bar.get("bar")
            if b is not None:
                b.update((i + 1) - b.n)
                if i + 1 == total:
                    b.close()

    return tick


def _run_impl(logdensity_fn, config: _Config, rng_key, positions, schedule, num_samples):
    """Warm-up and sampling as one ``lax.scan`` over ``num_warmup + num_samples`` steps.

    One loop body holds the kernel step, the adaptation (applied only while
    ``i < num_warmup``) and the write of draw ``i - num_warmup``; the
    log-density and its gradient appear in the compiled program twice (the
    initial states and the step) instead of six times in separate warm-up and
    sampling programs (initial states, step, window-end and final
    re-initialisations, starting log-densities; step). The kernel states must
    not depend on the tuned scalar (true of every kernel in
    :data:`~pymc_sbi.samplers.KERNELS`: a state is a position with its
    log-density and gradient), so the last warm-up state continues unchanged
    into sampling under the final tuned value.
    """
    spec, options = get_kernel(config.kernel, dict(config.options))
    n_chains, dim = positions.shape
    slow, end = schedule
    num_warmup = slow.shape[0]
    total = num_warmup + num_samples
    da_init, da_update, da_final = _dual_averaging(config.target_accept or 0.5)
    tunes_step = spec.adapt == "dual_averaging"
    warm_key, sample_key = jax.random.split(rng_key)
    keys = jnp.concatenate(
        [jax.random.split(warm_key, num_warmup), jax.random.split(sample_key, num_samples)]
    )

    def build(param, scale):
        return spec.build(_preconditioned(logdensity_fn, scale), param, dim, options)

    def select(pred, new, old):
        return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)

    scale0 = jnp.eye(dim) if config.dense else jnp.ones(dim)
    param0 = jnp.asarray(spec.initial_param(dim), float)
    states = jax.vmap(build(param0, scale0).init)(positions)
    init_lp = states.logdensity  # at the starting points (u = z while L = I)
    fields = set(getattr(states, "_fields", ()))
    rescalable = "position" in fields and fields <= adapt.RESCALABLE_FIELDS

    def step_and_stats(param, scale, key, states):
        states, info = jax.vmap(build(param, scale).step)(jax.random.split(key, n_chains), states)
        return states, info, spec.stats(states, info, param)

    _, _, stats_shape = jax.eval_shape(step_and_stats, param0, scale0, keys[0], states)
    draws = (
        jnp.zeros((num_samples, n_chains, dim), positions.dtype),
        jax.tree.map(lambda a: jnp.zeros((num_samples, *a.shape), a.dtype), stats_shape),
    )
    tick = _progress(total, f"warm-up + sampling ({config.kernel})") if config.progressbar else None

    def end_window(args):
        states, da, width, scale, acc = args
        new_scale = adapt.precondition_from_covariance(adapt.covariance(acc))
        new_param = jnp.exp(da.log_step_size)
        if rescalable:  # move the states: no log-density evaluation in this branch
            new_states = adapt.rescale_states(states, scale, new_scale)
        else:
            z = adapt.to_z(scale, states.position)
            new_alg = build(new_param if tunes_step else width, new_scale)
            new_states = jax.vmap(new_alg.init)(adapt.to_u(new_scale, z))
        return new_states, da_init(new_param), new_scale, adapt.welford_init(dim, config.dense)

    def adaptation(args):
        """One warm-up update of the tuned scalar, the preconditioner and the statistics."""
        (states, da, width, scale, acc, acc_sum, param_final), (info, z, is_slow, is_end, i) = args
        raw = spec.acceptance(info)
        accept = jnp.mean(jnp.nan_to_num(raw, nan=0.0))  # a NaN (diverged) move counts as 0
        if tunes_step:
            da = da_update(da, accept)
        elif spec.adapt == "slice_width":
            width = adapt.slice_width_update(width, info.num_expansions, info.num_shrink)
        acc = select(is_slow, adapt.welford_update(acc, z), acc)
        # mean acceptance over the steps after the last slow window (the final buffer)
        last_accept = jnp.where(jnp.all(jnp.isnan(raw)), jnp.nan, accept)
        acc_sum = jnp.where(is_slow, jnp.zeros(2), acc_sum + jnp.array([last_accept, 1.0]))
        states, da, scale, acc = jax.lax.cond(
            is_end, end_window, lambda a: (a[0], a[1], a[3], a[4]), (states, da, width, scale, acc)
        )
        # the tuned scalar, fixed from the last warm-up step on
        final = da_final(da) if tunes_step else width
        param_final = jnp.where(i == num_warmup - 1, final, param_final).astype(param0.dtype)
        return states, da, width, scale, acc, acc_sum, param_final

    def one_step(carry, xs):
        tuning, draws = carry
        states, da, width, scale, _, _, param_final = tuning
        key, is_slow, is_end, i = xs
        warm = i < num_warmup
        adapting = jnp.exp(da.log_step_size) if tunes_step else width
        param = jnp.where(warm, adapting, param_final)
        states, info, stats = step_and_stats(param, scale, key, states)
        z = adapt.to_z(scale, states.position)
        tuning = (states, *tuning[1:])
        # sampling steps skip the adaptation altogether
        tuning = jax.lax.cond(
            warm, adaptation, lambda a: a[0], (tuning, (info, z, is_slow, is_end, i))
        )
        # draw i - num_warmup (a warm-up step writes out of range: dropped)
        j = jnp.where(warm, num_samples, i - num_warmup)
        draws = jax.tree.map(lambda buf, new: buf.at[j].set(new, mode="drop"), draws, (z, stats))
        if tick is not None:
            jax.debug.callback(tick, i)
        return (tuning, draws), None

    pad = jnp.zeros(num_samples, bool)
    tuning = (
        states,
        da_init(param0),
        param0,
        scale0,
        adapt.welford_init(dim, config.dense),
        jnp.zeros(2),
        param0,
    )
    xs = (keys, jnp.concatenate([slow, pad]), jnp.concatenate([end, pad]), jnp.arange(total))
    ((_, _, _, scale, _, acc_sum, param), draws), _ = jax.lax.scan(one_step, (tuning, draws), xs)
    warm_accept = jnp.where(acc_sum[1] > 0, acc_sum[0] / jnp.maximum(acc_sum[1], 1.0), jnp.nan)
    swap = lambda a: jnp.swapaxes(a, 0, 1)
    z, stats = draws
    stats = {k: swap(v) for k, v in stats.items()}
    return swap(z), stats, TunedParameters(param, scale), warm_accept, init_lp


_run = jax.jit(_run_impl, static_argnums=(0, 1, 5))


def _dual_averaging(target: float):
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    return dual_averaging_adaptation(target)


def _hashable_options(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = tuple(sorted(options.items()))
    try:
        hash(items)
    except TypeError as err:
        raise TypeError(
            f"Kernel options must be hashable (they key the compilation cache): {err}"
        ) from None
    return items


def run_chains(
    rng_key: jax.Array,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    init_positions: jax.Array | np.ndarray,
    *,
    kernel: str = "nuts",
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float | None = None,
    metric: str = "diag",
    progressbar: bool = False,
    **kernel_options: Any,
) -> ChainResult:
    r"""Warm up and run ``chains`` vectorised chains of a BlackJAX kernel.

    Parameters
    ----------
    rng_key
        JAX PRNG key.
    logdensity_fn
        ``z (dim,) -> log pi(z)``, unnormalised, on all of :math:`\mathbb{R}^{dim}`
        (``-inf`` or NaN outside a support is rejected by the derivative-free
        kernels). Keep the same function object between calls to reuse the
        compiled programs.
    init_positions
        ``(chains, dim)`` starting points (one per chain).
    kernel
        ``"nuts"``, ``"hmc"``, ``"mala"``, ``"rmh"``, ``"slice"`` or ``"imh"``
        (see :data:`pymc_sbi.samplers.KERNELS`).
    num_warmup, num_samples
        Warm-up (tuning) steps and kept draws per chain.
    target_accept
        Target acceptance rate of the dual averaging (defaults: NUTS 0.8, HMC
        0.65, MALA 0.574, RMH 0.234).
    metric
        ``"diag"`` or ``"dense"`` preconditioner (ignored by ``"imh"``).
    progressbar
        Show tqdm bars for warm-up and sampling (a host callback per step).
    **kernel_options
        Kernel options: NUTS ``max_tree_depth`` (10); HMC
        ``num_integration_steps`` (16); slice ``interval`` (``"stepping_out"``
        or ``"doubling"``), ``max_expansions`` (10), ``max_shrinkage`` (100);
        IMH ``proposal`` (required).

    Returns
    -------
    ChainResult
        ``positions`` ``(chains, num_samples, dim)``, ``sample_stats``, ``tuned``
        parameters and the warm-up's final acceptance rate.

    Raises
    ------
    ValueError
        For a bad kernel, option, metric, shape, or a starting point with a
        non-finite log-density.
    """
    spec, options = get_kernel(kernel, kernel_options)
    if metric not in ("diag", "dense"):
        raise ValueError(f"metric must be 'diag' or 'dense', got {metric!r}.")
    positions = jnp.asarray(init_positions, dtype=jnp.result_type(float))
    if positions.ndim != 2 or positions.shape[0] < 1 or positions.shape[1] < 1:
        raise ValueError(
            f"init_positions must have shape (chains, dim), got {tuple(positions.shape)}."
        )
    if int(num_warmup) < 0 or int(num_samples) < 1:
        raise ValueError(
            f"num_warmup must be >= 0 and num_samples >= 1, got {num_warmup}, {num_samples}."
        )
    if target_accept is not None and not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}.")
    config = _Config(
        kernel=kernel,
        options=_hashable_options(options),
        target_accept=float(target_accept or spec.target_accept or 0.5),
        dense=metric == "dense" and spec.precondition,
        progressbar=bool(progressbar),
    )
    slow, end = adapt.warmup_schedule(int(num_warmup), with_windows=spec.precondition)
    schedule = (jnp.asarray(slow), jnp.asarray(end))
    positions, stats, tuned, warm_accept, init_lp = _run(
        logdensity_fn, config, rng_key, positions, schedule, int(num_samples)
    )
    bad = np.flatnonzero(~np.isfinite(np.asarray(init_lp)))
    if bad.size:
        raise ValueError(
            f"The log-density is not finite at the starting point of chain(s) {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''}; give init positions inside the support."
        )
    return ChainResult(positions, stats, tuned, warm_accept)
