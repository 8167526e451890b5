r"""Run many BlackJAX chains on one log-density: one compiled warm-up, one compiled sampler.

:func:`run_chains` is the pure-function layer under :func:`pymc_sbi.sample`:
give it a JAX ``logdensity_fn`` of a flat vector, a key and an
``(chains, dim)`` array of starting points, pick a kernel by name, and get
back the draws, the per-draw statistics and the tuned parameters. Chains are
``jax.vmap``-ed (a step of all chains is one batched call of the
log-density), the warm-up and the sampling loops are each a ``lax.scan`` in
one ``jax.jit`` program, cached on ``(logdensity_fn, kernel, options,
shapes)``: calling again with the same function and shapes compiles nothing.
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
    progress: bool


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


def _warmup_impl(logdensity_fn, config: _Config, rng_key, positions, keys_slow_end):
    spec, options = get_kernel(config.kernel, dict(config.options))
    n_chains, dim = positions.shape
    slow, end = keys_slow_end
    num_steps = slow.shape[0]
    da_init, da_update, da_final = _dual_averaging(config.target_accept or 0.5)

    def build(param, scale):
        return spec.build(_preconditioned(logdensity_fn, scale), param, dim, options)

    scale0 = jnp.eye(dim) if config.dense else jnp.ones(dim)
    param0 = jnp.asarray(spec.initial_param(dim), float)
    states = jax.vmap(build(param0, scale0).init)(positions)
    tick = _progress(num_steps, f"warm-up ({config.kernel})") if config.progress else None

    def one_step(carry, xs):
        states, da, width, scale, acc, acc_sum = carry
        key, is_slow, is_end, i = xs
        param = jnp.exp(da.log_step_size) if spec.adapt == "dual_averaging" else width
        alg = build(param, scale)
        states, info = jax.vmap(alg.step)(jax.random.split(key, n_chains), states)
        raw = spec.acceptance(info)
        accept = jnp.mean(jnp.nan_to_num(raw, nan=0.0))  # a NaN (diverged) move counts as 0
        if spec.adapt == "dual_averaging":
            da = da_update(da, accept)
        elif spec.adapt == "slice_width":
            width = adapt.slice_width_update(width, info.num_expansions, info.num_shrink)
        z = adapt.to_z(scale, states.position)
        acc = jax.tree.map(
            lambda new, old: jnp.where(is_slow, new, old), adapt.welford_update(acc, z), acc
        )
        # mean acceptance over the steps after the last slow window (the final buffer)
        acc_sum = jnp.where(
            is_slow,
            jnp.zeros(2),
            acc_sum + jnp.array([jnp.where(jnp.all(jnp.isnan(raw)), jnp.nan, accept), 1.0]),
        )

        def end_window(args):
            states, da, scale, acc = args
            new_scale = adapt.precondition_from_covariance(adapt.covariance(acc))
            z = adapt.to_z(scale, states.position)
            new_param = jnp.exp(da.log_step_size)
            new_alg = build(new_param if spec.adapt == "dual_averaging" else width, new_scale)
            new_states = jax.vmap(new_alg.init)(adapt.to_u(new_scale, z))
            return new_states, da_init(new_param), new_scale, adapt.welford_init(dim, config.dense)

        states, da, scale, acc = jax.lax.cond(
            is_end, end_window, lambda args: args, (states, da, scale, acc)
        )
        if tick is not None:
            jax.debug.callback(tick, i)
        return (states, da, width, scale, acc, acc_sum), None

    carry = (
        states,
        da_init(param0),
        param0,
        scale0,
        adapt.welford_init(dim, config.dense),
        jnp.zeros(2),
    )
    xs = (jax.random.split(rng_key, num_steps), slow, end, jnp.arange(num_steps))
    (states, da, width, scale, _, acc_sum), _ = jax.lax.scan(one_step, carry, xs)
    if spec.adapt == "dual_averaging" and num_steps > 0:
        param = da_final(da)
    elif spec.adapt == "dual_averaging":
        param = param0
    else:
        param = width
    # the tuned parameter changes the kernel state (e.g. nothing for NUTS, but keep
    # it uniform): re-initialise at the final positions under the final kernel
    z = adapt.to_z(scale, states.position)
    states = jax.vmap(build(param, scale).init)(adapt.to_u(scale, z))
    init_lp = jax.vmap(logdensity_fn)(positions)
    warm_accept = jnp.where(acc_sum[1] > 0, acc_sum[0] / jnp.maximum(acc_sum[1], 1.0), jnp.nan)
    return states, TunedParameters(param, scale), warm_accept, init_lp


def _sample_impl(logdensity_fn, config: _Config, rng_key, states, tuned, num_samples):
    spec, options = get_kernel(config.kernel, dict(config.options))
    dim = tuned.scale.shape[0]
    alg = spec.build(_preconditioned(logdensity_fn, tuned.scale), tuned.param, dim, options)
    n_chains = jax.tree.leaves(states)[0].shape[0]
    tick = _progress(num_samples, f"sampling ({config.kernel})") if config.progress else None

    def one_step(states, xs):
        key, i = xs
        states, info = jax.vmap(alg.step)(jax.random.split(key, n_chains), states)
        stats = spec.stats(states, info, tuned.param)
        if tick is not None:
            jax.debug.callback(tick, i)
        return states, (adapt.to_z(tuned.scale, states.position), stats)

    xs = (jax.random.split(rng_key, num_samples), jnp.arange(num_samples))
    _, (z, stats) = jax.lax.scan(one_step, states, xs)
    swap = lambda a: jnp.swapaxes(a, 0, 1)
    return swap(z), {k: swap(v) for k, v in stats.items()}


_warmup = jax.jit(_warmup_impl, static_argnums=(0, 1))
_sample = jax.jit(_sample_impl, static_argnums=(0, 1, 5))


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
        progress=bool(progressbar),
    )
    slow, end = adapt.warmup_schedule(int(num_warmup), with_windows=spec.precondition)
    warm_key, sample_key = jax.random.split(rng_key)
    states, tuned, warm_accept, init_lp = _warmup(
        logdensity_fn, config, warm_key, positions, (jnp.asarray(slow), jnp.asarray(end))
    )
    bad = np.flatnonzero(~np.isfinite(np.asarray(init_lp)))
    if bad.size:
        raise ValueError(
            f"The log-density is not finite at the starting point of chain(s) {bad[:10].tolist()}"
            f"{' ...' if bad.size > 10 else ''}; give init positions inside the support."
        )
    positions, stats = _sample(logdensity_fn, config, sample_key, states, tuned, int(num_samples))
    return ChainResult(positions, stats, tuned, warm_accept)
