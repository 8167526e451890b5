r"""Use a neural posterior estimate: sample it, evaluate it, find its mode, export it.

An NPE estimator (``kind="npe"``, trained with :func:`pymc_sbi.objectives.npe`)
is a normalised density :math:`q(\theta \mid x)` on all of
:math:`\mathbb{R}^d`.  When the prior has bounded support :math:`S` (e.g. a
``Uniform``), part of the mass of :math:`q` *leaks* outside :math:`S`, where
the true posterior is zero.  As in sbi (Greenberg et al. 2019, sec. 3.3), the
posterior estimate is the truncation of :math:`q` to the support,

.. math::

    \hat p(\theta \mid x) = \frac{q(\theta \mid x)\,\mathbf 1[\theta \in S]}{Z(x)},
    \qquad Z(x) = P_q(\theta \in S \mid x) = \int_S q(\theta \mid x)\,d\theta,

so that

- :func:`sample_posterior` draws from :math:`\hat p` by rejection: draw from
  :math:`q`, keep the draws inside :math:`S`; the acceptance rate estimates
  :math:`Z(x)` and the *leakage* is :math:`1 - Z(x)`;
- :func:`log_prob_corrected` evaluates :math:`\log \hat p`, with :math:`Z(x)`
  estimated by Monte Carlo (:func:`support_mass`);
- :func:`map_estimate` maximises :math:`\log q` over :math:`S`
  (:math:`Z(x)` does not move the mode);
- :func:`to_datatree` / :func:`posterior_samples` return ArviZ ``DataTree``
  objects whose variables carry the prior model's names, shapes, dims and coords.

:math:`S` is the box ``[spec.lower, spec.upper]`` recorded from the prior
model's transforms (see :func:`pymc_sbi.prior.param_spec`); an unbounded spec
gives :math:`Z = 1` and no rejection.

References
----------
D. Greenberg, M. Nonnenmacher, J. Macke, "Automatic Posterior Transformation
for Likelihood-Free Inference", ICML 2019, arXiv:1905.07488.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.estimator import Estimator
from pymc_sbi.seed import as_key
from pymc_sbi.spec import ParamSpec

__all__ = [
    "PosteriorDraws",
    "log_prob_corrected",
    "posterior_samples",
    "sample_posterior",
    "support_mass",
    "to_datatree",
]

_MIN_ROUND = 256  # smallest number of draws per observation in a rejection round


class PosteriorDraws(NamedTuple):
    """Output of :func:`sample_posterior` (unpacks as ``samples, acceptance_rate``).

    Attributes
    ----------
    samples
        ``(n, d)`` draws, or ``(B, n, d)`` for a batch of ``B`` observations.
    acceptance_rate
        Fraction of the flow's draws that fell inside the prior support: a
        float, or ``(B,)`` for a batch.  The leakage is ``1 - acceptance_rate``.
    """

    samples: np.ndarray
    acceptance_rate: float | np.ndarray

    @property
    def leakage(self) -> float | np.ndarray:
        """Estimated mass of the flow outside the prior support, ``1 - acceptance_rate``."""
        return 1.0 - self.acceptance_rate


# ------------------------------------------------------------------ helpers
def check_npe(estimator: Estimator) -> None:
    kind = getattr(estimator, "kind", None)
    if kind != "npe":
        raise TypeError(f"Need a posterior estimator (kind 'npe'), got kind {kind!r}.")


def observation_batch(estimator: Estimator, x_obs) -> tuple[jax.Array, bool]:
    """``x_obs`` as a ``(B, *x_shape)`` batch, and whether it was given as one."""
    x = jnp.asarray(x_obs)
    shape, k = estimator.x_shape, len(estimator.x_shape)
    if x.shape == shape:
        return x[None], False
    if x.ndim == k + 1 and x.shape[1:] == shape:
        return x, True
    raise ValueError(
        f"x_obs has shape {tuple(x.shape)}; expected {shape} for one observation or "
        f"(B, {', '.join(map(str, shape))}) for a batch of B observations (x_shape {shape} as "
        "in training)."
    )


def _bounds(spec: ParamSpec) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(spec.lower, np.float64), np.asarray(spec.upper, np.float64)


def _bounded(spec: ParamSpec) -> bool:
    lo, hi = _bounds(spec)
    return bool(np.any(np.isfinite(lo)) or np.any(np.isfinite(hi)))


def in_box(lower, upper, theta: jax.Array) -> jax.Array:
    """Pure-JAX mask ``(...)``: every element of ``theta`` ``(..., d)`` within its bounds."""
    theta = jnp.asarray(theta)
    lo = jnp.asarray(np.asarray(lower, np.float64), theta.dtype)
    hi = jnp.asarray(np.asarray(upper, np.float64), theta.dtype)
    return jnp.all((theta >= lo) & (theta <= hi), -1)


def _in_support(spec: ParamSpec, theta: jax.Array) -> jax.Array:
    """:func:`in_box` for the bounds of ``spec``."""
    return in_box(spec.lower, spec.upper, theta)


# ----------------------------------------------------------------- sampling
def sample_posterior(
    estimator: Estimator,
    x_obs,
    num_samples: int,
    seed=0,
    *,
    batch: int = 65_536,
    max_tries: int = 100,
    min_acceptance: float = 1e-3,
    warn_acceptance: float = 1e-2,
) -> PosteriorDraws:
    r"""Draw ``num_samples`` samples from the NPE posterior truncated to the prior support.

    Rejection sampling from :math:`q(\theta \mid x_o)`: draw, keep the draws
    with :math:`\theta \in S` (and finite), repeat until ``num_samples`` are kept.  The
    kept draws are exact samples of
    :math:`\hat p(\theta \mid x_o) \propto q(\theta \mid x_o)\,\mathbf 1[\theta \in S]`.

    Parameters
    ----------
    estimator
        A trained NPE estimator.
    x_obs
        One observation ``x_shape`` or a batch ``(B, *x_shape)``.
    num_samples
        Number of samples per observation.
    seed
        Integer seed or JAX PRNG key; same seed, same samples.
    batch
        Largest number of draws per observation in one round.  The first round
        draws about ``num_samples``, later rounds about what is still missing divided by
        the acceptance rate so far; round sizes are powers of two between 256
        and ``batch``, so few shapes are ever compiled.
    max_tries
        Largest number of rounds.
    min_acceptance
        Once ``10 / min_acceptance`` draws of an observation have been made,
        an acceptance rate below this raises instead of looping on.
    warn_acceptance
        Warn (``UserWarning``) when the acceptance rate is below this.

    Returns
    -------
    PosteriorDraws
        ``samples`` ``(num_samples, d)`` (``(B, num_samples, d)`` for a batch) and
        ``acceptance_rate``
        (float, or ``(B,)``): the fraction of all draws inside :math:`S`, a
        consistent estimate of :math:`Z(x_o) = P_q(\theta \in S \mid x_o)` from at
        least ``num_samples`` draws (use :func:`support_mass` for a fixed-size estimate).

    Raises
    ------
    RuntimeError
        If the acceptance rate falls below ``min_acceptance``, or ``num_samples`` samples
        are not reached in ``max_tries`` rounds.
    """
    check_npe(estimator)
    n = int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}.")
    xb, batched = observation_batch(estimator, x_obs)
    n_obs, spec = xb.shape[0], estimator.spec
    key = as_key(seed)
    kept: list[list[np.ndarray]] = [[] for _ in range(n_obs)]
    n_kept = np.zeros(n_obs, np.int64)
    n_inside = np.zeros(n_obs, np.int64)
    n_drawn = np.zeros(n_obs, np.int64)
    min_draws = math.ceil(10.0 / min_acceptance)
    size = _round_size(n, batch)
    for _ in range(int(max_tries)):
        key, sub = jax.random.split(key)
        draws = jnp.swapaxes(estimator.sample(sub, xb, size), 0, 1)  # (B, size, d)
        inside = np.asarray(_in_support(spec, draws) & jnp.all(jnp.isfinite(draws), -1))
        draws = np.asarray(draws)
        active = n_kept < n
        for b in np.flatnonzero(active):
            n_drawn[b] += size
            n_inside[b] += int(inside[b].sum())
            take = draws[b][inside[b]][: n - n_kept[b]]
            kept[b].append(take)
            n_kept[b] += take.shape[0]
        if np.all(n_kept >= n):
            break
        rate = n_inside / np.maximum(n_drawn, 1)
        low = (n_kept < n) & (n_drawn >= min_draws) & (rate < min_acceptance)
        if np.any(low):
            b = int(np.flatnonzero(low)[0])
            raise RuntimeError(_low_acceptance_message(rate[b], n_drawn[b], b, batched))
        need = n - n_kept[n_kept < n]
        est = (n_inside + 1.0) / (n_drawn + 2.0)  # never 0: keeps the next round finite
        want = np.max(need / np.maximum(est[n_kept < n], min_acceptance)) * 1.2
        size = _round_size(want, batch)
    else:
        raise RuntimeError(
            f"Only {int(n_kept.min())} of {n} samples inside the prior support after "
            f"{max_tries} rounds (acceptance rate {float((n_inside / n_drawn).min()):.2e}); "
            "raise max_tries or batch."
        )
    samples = np.stack([np.concatenate(k, axis=0) for k in kept])
    rate = n_inside / n_drawn
    if np.any(rate < warn_acceptance):
        warnings.warn(
            f"Only {float(rate.min()):.2%} of the posterior estimate's draws fall inside the prior "
            f"support (leakage {1 - float(rate.min()):.2%}); sampling is slow and the estimate "
            "is poor near the observation. Check x_obs against the training data, or train "
            "longer / with more simulations.",
            UserWarning,
            stacklevel=2,
        )
    if batched:
        return PosteriorDraws(samples, rate)
    return PosteriorDraws(samples[0], float(rate[0]))


def _round_size(want: float, batch: int) -> int:
    """Draws per observation in a round: a power of two in ``[256, batch]``.

    Powers of two keep the number of distinct shapes (and compilations) small
    and shared between calls.
    """
    size = 2 ** math.ceil(math.log2(max(float(want), 1.0)))
    return int(min(max(size, _MIN_ROUND), int(batch)))


def _low_acceptance_message(rate: float, drawn: int, b: int, batched: bool) -> str:
    which = f"observation {b}" if batched else "the observation"
    return (
        f"Only {rate:.2e} of {drawn} draws from the posterior estimate for {which} fall "
        f"inside the prior support (leakage {1 - rate:.4%}); rejection sampling would not "
        "finish. The estimator places almost all its mass outside the prior: x_obs is "
        "probably far from the training simulations, or the estimator is undertrained. "
        "Sample prior x likelihood with MCMC instead, or retrain (more simulations, or "
        "sequential rounds focused on x_obs)."
    )


def support_mass(estimator: Estimator, x_obs, *, num_mc: int = 10_000, seed=0) -> jax.Array:
    r"""Monte-Carlo estimate of :math:`Z(x) = P_q(\theta \in S \mid x)`.

    .. math::

        \hat Z(x) = \frac1{N} \sum_{i=1}^N \mathbf 1[\theta_i \in S], \qquad
        \theta_i \sim q(\theta \mid x),

    with standard error :math:`\sqrt{Z (1 - Z) / N}`.  Exactly 1 (no draws)
    when the prior support is unbounded.

    Parameters
    ----------
    estimator
        A trained NPE estimator.
    x_obs
        One observation ``x_shape`` or a batch ``(B, *x_shape)``.
    num_mc
        Number of draws :math:`N` per observation.
    seed
        Integer seed or JAX PRNG key.

    Returns
    -------
    jax.Array
        Scalar, or ``(B,)`` for a batch.
    """
    check_npe(estimator)
    xb, batched = observation_batch(estimator, x_obs)
    if not _bounded(estimator.spec):
        z = jnp.ones((xb.shape[0],), estimator.dtype)
    else:
        draws = estimator.sample(as_key(seed), xb, int(num_mc))  # (num_mc, B, d)
        z = jnp.mean(_in_support(estimator.spec, draws), axis=0, dtype=draws.dtype)
    return z if batched else z[0]


def log_prob_corrected(
    estimator: Estimator,
    x_obs,
    theta,
    num_mc: int = 10_000,
    seed=0,
    *,
    mass=None,
    outside: str = "raise",
) -> jax.Array:
    r"""Log density of the posterior estimate truncated to the prior support.

    .. math::

        \log \hat p(\theta \mid x) = \log q(\theta \mid x) - \log \hat Z(x)
        \quad (\theta \in S), \qquad -\infty \quad (\theta \notin S),

    with :math:`\hat Z` from :func:`support_mass` (``num_mc`` draws, as sbi's
    ``leakage_correction``), so that :math:`\hat p` integrates to one over
    :math:`S` up to the Monte Carlo error of :math:`\hat Z`.

    Parameters
    ----------
    estimator
        A trained NPE estimator.
    x_obs
        One observation ``x_shape`` or a batch ``(B, *x_shape)``.
    theta
        ``(..., d)`` parameters (``(..., B, d)`` against a batch of ``B``
        observations: leading shapes broadcast against ``x_obs``'s).
    num_mc
        Draws for :math:`\hat Z`.
    seed
        Integer seed or JAX PRNG key for those draws.
    mass
        A precomputed :math:`\hat Z(x)` (e.g. ``sample_posterior``'s acceptance
        rate or :func:`support_mass`), to skip the Monte-Carlo step.
    outside
        ``"raise"`` (default): a ``theta`` outside the prior support is an
        error that names the parameter and its bounds (the density there is
        zero, and asking for it is usually a mistake of units or order).
        ``"-inf"``: return :math:`-\infty` there instead, as sbi does -- for
        grids and vectorised code that expect it.

    Returns
    -------
    jax.Array
        Log densities of shape ``broadcast(theta.shape[:-1], B)``.  Gradients
        with respect to ``theta`` are those of :math:`\log q` inside :math:`S`.

    Raises
    ------
    ValueError
        If ``x_obs`` has the wrong shape (the message names the expected one),
        ``theta``'s last axis is not ``d``, :math:`\hat Z(x) = 0`, or (with
        ``outside="raise"``) some ``theta`` lies outside the prior support.
    """
    if outside not in ("raise", "-inf"):
        raise ValueError(f"outside must be 'raise' or '-inf', got {outside!r}.")
    check_npe(estimator)
    xb, batched = observation_batch(estimator, x_obs)
    z = support_mass(estimator, x_obs, num_mc=num_mc, seed=seed) if mass is None else mass
    z = jnp.asarray(z)
    if bool(jnp.any(z <= 0)):
        raise ValueError(
            f"None of the {num_mc} draws of the posterior estimate fell inside the prior support "
            "(Z(x) = 0): the corrected density is undefined. Check x_obs against the training "
            "data."
        )
    lp = estimator.log_prob(xb if batched else xb[0], theta)
    inside = _in_support(estimator.spec, jnp.asarray(theta, lp.dtype))
    traced = any(isinstance(a, jax.core.Tracer) for a in (theta, inside))
    if outside == "raise" and not traced:  # under jit/grad the check is the caller's
        _raise_outside(estimator.spec, np.asarray(theta, float), np.asarray(inside))
    return jnp.where(inside, lp - jnp.log(z).astype(lp.dtype), -jnp.inf)


def _raise_outside(spec: ParamSpec, theta: np.ndarray, inside: np.ndarray) -> None:
    """ValueError naming the first parameter of the first ``theta`` outside the support."""
    if inside.all():
        return
    theta = np.broadcast_to(theta, inside.shape + theta.shape[-1:])
    row = theta[np.unravel_index(int(np.argmin(inside.ravel())), inside.shape)]
    lower, upper = np.asarray(spec.lower), np.asarray(spec.upper)
    bad = np.flatnonzero(~((row >= lower) & (row <= upper)))
    j = int(bad[0]) if bad.size else 0
    raise ValueError(
        f"{int((~inside).sum())} of {inside.size} theta lie outside the prior support, e.g. "
        f"{spec.labels[j]} = {row[j]:.6g} not in [{lower[j]:.6g}, {upper[j]:.6g}]: the "
        "posterior density is zero there. Pass outside='-inf' to get -inf instead."
    )


# ------------------------------------------------------------------- ArviZ
def _var_dims(name: str, shape: tuple[int, ...], dims) -> list[str]:
    if dims is not None:
        return list(dims)
    return [f"{name}_dim_{i}" for i in range(len(shape))]


def to_datatree(
    samples,
    spec: ParamSpec,
    *,
    observations=None,
    obs_dim: str = "observation",
    attrs: dict[str, Any] | None = None,
):
    """Posterior samples as an ArviZ ``DataTree`` with the prior model's variables.

    Parameters
    ----------
    samples
        ``(n, d)`` flat draws, or ``(B, n, d)`` for ``B`` observations.
    spec
        The estimator's :class:`~pymc_sbi.ParamSpec`: names, shapes, dims and
        coords of the variables.
    observations
        Optional observed data (``x_shape``, or ``(B, *x_shape)`` for a batch),
        stored as variable ``x`` of an ``observed_data`` group.
    obs_dim
        Name of the observation dimension of a batch (coords ``0..B-1``).
    attrs
        Extra attributes of the ``posterior`` group.

    Returns
    -------
    xarray.DataTree
        A ``posterior`` group with dims ``(chain=1, draw=n, *var_dims)`` per
        variable -- ``(chain, draw, obs_dim, *var_dims)`` for a batch -- where
        ``var_dims`` are the model's ``dims`` or ``{name}_dim_{i}`` (PyMC's
        default names), and coords from the model's coords.
    """
    import arviz as az

    samples = np.asarray(samples)
    if samples.ndim not in (2, 3) or samples.shape[-1] != spec.dim:
        raise ValueError(
            f"samples has shape {samples.shape}; expected (n, {spec.dim}) or "
            f"(B, n, {spec.dim}) with columns {list(spec.labels)}."
        )
    batched = samples.ndim == 3
    values = spec.unflatten(np.moveaxis(samples, 0, 1) if batched else samples)
    coords: dict[str, Any] = {k: list(v) for k, v in spec.coords}
    dims: dict[str, list[str]] = {}
    data: dict[str, np.ndarray] = {}
    for name, shape, var_dims in zip(spec.names, spec.shapes, spec.dims, strict=True):
        core = _var_dims(name, shape, var_dims)
        dims[name] = [obs_dim, *core] if batched else core
        data[name] = values[name][None]  # chain axis
    if batched:
        coords[obs_dim] = list(range(samples.shape[0]))
    groups = {"posterior": data}
    if observations is not None:
        obs = np.asarray(observations)
        if batched and obs.shape[0] != samples.shape[0]:
            raise ValueError(
                f"observations has {obs.shape[0]} rows but samples has {samples.shape[0]}."
            )
        event = obs.shape[1:] if batched else obs.shape
        x_dims = [f"x_dim_{i}" for i in range(len(event))]
        dims["x"] = [obs_dim, *x_dims] if batched else x_dims
        groups["observed_data"] = {"x": obs}
    return az.from_dict(groups, dims=dims, coords=coords, attrs={"posterior": dict(attrs or {})})


def posterior_samples(estimator: Estimator, x_obs, num_samples: int = 1000, seed=0, **kwargs):
    """Samples of the (support-truncated) NPE posterior as an ArviZ ``DataTree``.

    :func:`sample_posterior` followed by :func:`to_datatree` (with the
    observations in ``observed_data``).  ``kwargs`` go to
    :func:`sample_posterior`.  The ``posterior`` group's attributes record
    ``acceptance_rate`` and ``leakage`` (floats, or lists for a batch) and
    ``inference_method="npe"``.
    """
    draws = sample_posterior(estimator, x_obs, num_samples, seed, **kwargs)
    rate = np.asarray(draws.acceptance_rate, np.float64)
    attrs = {
        "inference_method": "npe",
        "acceptance_rate": rate.tolist(),
        "leakage": (1.0 - rate).tolist(),
    }
    return to_datatree(draws.samples, estimator.spec, observations=x_obs, attrs=attrs)
