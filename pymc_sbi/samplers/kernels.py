r"""BlackJAX kernels by name, each with what its warm-up tunes and the statistics it reports.

Every kernel here samples a log-density of one flat vector. The driver
(:mod:`pymc_sbi.samplers.driver`) runs it on a *preconditioned* target: with a
linear map :math:`L` estimated during warm-up (diagonal standard deviations or
the Cholesky factor of the covariance, pooled over chains),

.. math::

    z = L u, \qquad \log \pi_u(u) = \log \pi(L u),

so every kernel below sees a target of roughly unit scale (the constant
:math:`\log|\det L|` is dropped: it changes no acceptance ratio). For NUTS and
HMC this is the usual mass-matrix adaptation (:math:`M^{-1} = L L^\top`), for
MALA a preconditioned Langevin step, for RMH a Gaussian proposal with
covariance :math:`s^2 L L^\top`, and for slice sampling hit-and-run along
directions drawn isotropically in :math:`u`.

Each :class:`KernelSpec` says which single scalar the warm-up tunes (its
``param``: the step size of NUTS/HMC/MALA, the proposal scale of RMH, the
initial bracket width of slice) and how: ``"dual_averaging"`` to a target
acceptance rate (Hoffman & Gelman 2014), ``"slice_width"`` (balance the
bracket's expansions and contractions, Karamanis & Beutler 2021), or
``"none"`` (IMH: its proposal is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

__all__ = ["KERNELS", "KernelSpec", "get_kernel", "register_kernel"]


class KernelSpec(NamedTuple):
    """How to build, tune and summarise one kernel.

    Attributes
    ----------
    build
        ``build(logdensity_fn, param, dim, options) -> blackjax.SamplingAlgorithm``
        where ``param`` is the tuned scalar and ``options`` the kernel's keyword
        options (a dict).
    adapt
        ``"dual_averaging"``, ``"slice_width"`` or ``"none"``.
    target_accept
        Default target acceptance rate for ``"dual_averaging"``.
    initial_param
        ``initial_param(dim) -> float``: the tuned scalar before warm-up.
    precondition
        Whether the warm-up estimates the linear map :math:`L` for this kernel.
    stats
        ``stats(state, info, param) -> dict`` of per-chain statistics named as
        ArviZ expects (``lp``, ``acceptance_rate``, ``diverging``, ``step_size``,
        ``tree_depth``, ``n_steps``, ``energy``).
    acceptance
        ``acceptance(info) -> (chains,)`` acceptance probabilities that drive the
        dual averaging (unused otherwise).
    options
        Allowed option names with their defaults.
    """

    build: Callable[..., Any]
    adapt: str
    target_accept: float | None
    initial_param: Callable[[int], float]
    precondition: bool
    stats: Callable[..., dict[str, jax.Array]]
    acceptance: Callable[[Any], jax.Array]
    options: Mapping[str, Any]


def _nan_to_neg_inf(logdensity_fn: Callable) -> Callable:
    """Treat a NaN log-density as -inf (outside the support) for derivative-free kernels."""

    def fn(z):
        ld = logdensity_fn(z)
        return jnp.where(jnp.isnan(ld), -jnp.inf, ld)

    return fn


def _step(param, like):
    return jnp.broadcast_to(param, jnp.shape(like)).astype(jnp.result_type(float))


# ---------------------------------------------------------------- NUTS / HMC
def _build_nuts(logdensity_fn, param, dim, options):
    return blackjax.nuts(
        logdensity_fn,
        param,
        jnp.ones(dim),
        max_num_doublings=int(options["max_tree_depth"]),
    )


def _nuts_stats(state, info, param):
    return {
        "lp": state.logdensity,
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "step_size": _step(param, state.logdensity),
        "tree_depth": info.num_trajectory_expansions,
        "n_steps": info.num_integration_steps,
        "energy": info.energy,
    }


def _build_hmc(logdensity_fn, param, dim, options):
    """HMC with the step size jittered uniformly in ``[1 - j, 1 + j] * param`` per transition.

    A fixed path length resonates with near-Gaussian targets (trajectories that
    return to their start); jittering breaks it (Neal 2011, sec. 5.4.2.2).
    """
    n_steps, jitter = int(options["num_integration_steps"]), float(options["jitter"])
    base = blackjax.hmc(logdensity_fn, param, jnp.ones(dim), n_steps)

    def step(rng_key, state):
        jitter_key, step_key = jax.random.split(rng_key)
        factor = 1.0 + jitter * jax.random.uniform(jitter_key, minval=-1.0, maxval=1.0)
        alg = blackjax.hmc(logdensity_fn, param * factor, jnp.ones(dim), n_steps)
        return alg.step(step_key, state)

    return blackjax.base.SamplingAlgorithm(base.init, step)


def _hmc_stats(state, info, param):
    return {
        "lp": state.logdensity,
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "step_size": _step(param, state.logdensity),
        "n_steps": info.num_integration_steps * jnp.ones_like(state.logdensity, dtype=int),
        "energy": info.energy,
    }


# ---------------------------------------------------------------- MALA / RMH
def _build_mala(logdensity_fn, param, dim, options):
    return blackjax.mala(logdensity_fn, param)


def _build_rmh(logdensity_fn, param, dim, options):
    return blackjax.additive_step_random_walk.normal_random_walk(
        _nan_to_neg_inf(logdensity_fn), param * jnp.ones(dim)
    )


def _mh_stats(state, info, param):
    return {
        "lp": state.logdensity,
        "acceptance_rate": info.acceptance_rate,
        "step_size": _step(param, state.logdensity),
    }


# ---------------------------------------------------------------- slice
_INTERVALS = {
    "stepping_out": blackjax.mcmc.slice.stepping_out,
    "doubling": blackjax.mcmc.slice.doubling,
}


def _build_slice(logdensity_fn, param, dim, options):
    interval = options["interval"]
    if interval not in _INTERVALS:
        raise ValueError(f"slice interval must be one of {sorted(_INTERVALS)}, got {interval!r}.")
    return blackjax.slice_sampling(
        _nan_to_neg_inf(logdensity_fn),
        width=param,
        interval=_INTERVALS[interval],
        max_expansions=int(options["max_expansions"]),
        max_shrinkage=int(options["max_shrinkage"]),
    )


def _slice_stats(state, info, param):
    # density evaluations: the two bracket ends, each expansion, each shrink
    return {
        "lp": state.logdensity,
        "step_size": _step(param, state.logdensity),
        "n_steps": 2 + info.num_expansions + info.num_shrink,
    }


# ---------------------------------------------------------------- IMH
def _build_imh(logdensity_fn, param, dim, options):
    proposal = options["proposal"]
    if proposal is None or not (hasattr(proposal, "sample") and hasattr(proposal, "log_prob")):
        raise ValueError(
            "kernel='imh' needs proposal=<object with sample(rng_key, n) and log_prob(z)> "
            "in the unconstrained space, e.g. ps.samplers.fit_gaussian(draws) or "
            "ps.samplers.npe_proposal(estimator, x_obs, model)."
        )
    target = _nan_to_neg_inf(logdensity_fn)

    def finite(z):
        return jnp.all(jnp.isfinite(z))

    def logdensity(z):  # a proposal outside the support (NaN z) is rejected
        return jnp.where(finite(z), target(jnp.where(finite(z), z, 0.0)), -jnp.inf)

    def proposal_logdensity(from_state, to_state):
        # blackjax's convention: log q(to | from), here independent of ``from``
        z = to_state.position
        return jnp.where(finite(z), proposal.log_prob(jnp.where(finite(z), z, 0.0)), 0.0)

    return blackjax.irmh(
        logdensity, lambda rng_key: proposal.sample(rng_key, 1)[0], proposal_logdensity
    )


def _imh_stats(state, info, param):
    return {"lp": state.logdensity, "acceptance_rate": info.acceptance_rate}


def _acceptance(info):
    return info.acceptance_rate


def _none(info):
    return jnp.full((), jnp.nan)


KERNELS: dict[str, KernelSpec] = {
    "nuts": KernelSpec(
        _build_nuts,
        "dual_averaging",
        0.8,
        lambda d: 0.5,
        True,
        _nuts_stats,
        _acceptance,
        {"max_tree_depth": 10},
    ),
    "hmc": KernelSpec(
        _build_hmc,
        "dual_averaging",
        0.65,
        lambda d: 0.5,
        True,
        _hmc_stats,
        _acceptance,
        {"num_integration_steps": 16, "jitter": 0.2},
    ),
    "mala": KernelSpec(
        _build_mala, "dual_averaging", 0.574, lambda d: 0.1, True, _mh_stats, _acceptance, {}
    ),
    "rmh": KernelSpec(
        _build_rmh,
        "dual_averaging",
        0.234,
        lambda d: 2.38 / d**0.5,
        True,
        _mh_stats,
        _acceptance,
        {},
    ),
    "slice": KernelSpec(
        _build_slice,
        "slice_width",
        None,
        lambda d: 2.0,
        True,
        _slice_stats,
        _none,
        {"interval": "stepping_out", "max_expansions": 10, "max_shrinkage": 100},
    ),
    "imh": KernelSpec(
        _build_imh,
        "none",
        None,
        lambda d: 1.0,
        False,
        _imh_stats,
        _acceptance,
        {"proposal": None},
    ),
}


def register_kernel(name: str, spec: KernelSpec) -> None:
    """Add (or replace) a kernel under ``name`` for :func:`~pymc_sbi.samplers.run_chains`."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"spec must be a KernelSpec, got {type(spec).__name__}.")
    KERNELS[name] = spec


def get_kernel(name: str, options: Mapping[str, Any]) -> tuple[KernelSpec, dict[str, Any]]:
    """The spec of ``name`` and its options (defaults overridden by ``options``).

    Raises
    ------
    ValueError
        For an unknown kernel or option.
    """
    if name not in KERNELS:
        raise ValueError(f"Unknown kernel {name!r}; choose from {sorted(KERNELS)}.")
    spec = KERNELS[name]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for kernel {name!r}; it takes {sorted(spec.options)}."
        )
    return spec, {**spec.options, **options}
