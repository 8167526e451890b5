"""Benchmark tasks in the style of sbibm, with PyMC priors and JAX simulators.

A :class:`Task` bundles what an SBI benchmark needs: the prior as a fresh
``pm.Model``, a pure JAX simulator for *one* parameter vector (the caller
``jax.vmap``-s and ``jax.jit``-s it), the observations, reference posterior
samples and true parameters for ``num_observation`` 1..10, and, where known,
the exact likelihood and analytic posterior.

Tasks
-----
``two_moons``
    sbibm's Two Moons task [1]_; observations and reference posterior samples
    are sbibm 1.1.0's files, shipped byte-identical in ``benchmarks/data``.
``slcp``
    sbibm's SLCP task ("simple likelihood, complex posterior") [1]_: a 5-D
    uniform prior, a Gaussian likelihood of 4 i.i.d. 2-D draws and a
    four-mode posterior; sbibm 1.1.0's observations and reference samples.
``linear_gaussian``
    A 2-D conjugate Gaussian task with a closed-form posterior, for exact
    tests.

References
----------
.. [1] Lueckmann, J.-M., Boelts, J., Greenberg, D., Gonçalves, P. and Macke, J.
   (2021). Benchmarking simulation-based inference. AISTATS.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    import pymc as pm

__all__ = [
    "TASKS",
    "Task",
    "get_task",
    "linear_gaussian",
    "linear_gaussian_posterior",
    "slcp",
    "slcp_log_likelihood",
    "slcp_moments",
    "two_moons",
    "two_moons_log_likelihood",
]

NUM_OBSERVATIONS = 10
NUM_REFERENCE_SAMPLES = 10_000


@dataclass(frozen=True)
class Task:
    """An SBI benchmark task.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"two_moons"``.
    param_names : tuple of str
        Names of the flattened parameter vector ``theta`` (order of
        ``prior_model().free_RVs``, each flattened in C order).
    dim_data : int
        Length ``x_dim`` of one simulator output.
    prior_model : callable
        ``prior_model() -> pm.Model``: a fresh model whose free random
        variables are the parameters.
    simulator : callable
        ``simulator(rng_key, theta) -> x``: pure JAX, ``theta`` of shape
        ``(d,)``, ``x`` of shape ``(dim_data,)``.
    observation, true_parameters : callable
        ``f(num) -> np.ndarray`` for ``num`` in ``1..num_observations``.
    reference_samples : callable
        ``reference_samples(num) -> np.ndarray`` of shape ``(10000, d)``.
    num_observations : int
        Number of stored observations.
    log_likelihood : callable, optional
        Exact ``log_likelihood(theta, x) -> scalar`` in JAX, if tractable.
    posterior_mean, posterior_cov : callable, optional
        Analytic posterior moments ``f(num) -> np.ndarray``.
    analytic_posterior : callable, optional
        ``analytic_posterior(x_obs_trials) -> (mean, cov)`` for ``(n, x_dim)``
        i.i.d. trials.
    """

    name: str
    param_names: tuple[str, ...]
    dim_data: int
    prior_model: Callable[[], pm.Model]
    simulator: Callable[[jax.Array, jax.Array], jax.Array]
    observation: Callable[[int], np.ndarray]
    reference_samples: Callable[[int], np.ndarray]
    true_parameters: Callable[[int], np.ndarray]
    num_observations: int = NUM_OBSERVATIONS
    log_likelihood: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    posterior_mean: Callable[[int], np.ndarray] | None = None
    posterior_cov: Callable[[int], np.ndarray] | None = None
    analytic_posterior: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def dim_parameters(self) -> int:
        """Length ``d`` of the flattened parameter vector."""
        return len(self.param_names)


def _check_num(num: int) -> int:
    if not isinstance(num, int | np.integer) or not 1 <= num <= NUM_OBSERVATIONS:
        raise ValueError(
            f"num_observation must be an integer in 1..{NUM_OBSERVATIONS}; got {num!r}."
        )
    return int(num)


@functools.lru_cache(maxsize=64)
def _load_sbibm_csv(task: str, num: int, filename: str) -> np.ndarray:
    """Read one of sbibm's files shipped in ``benchmarks/data`` (header row skipped)."""
    ref = resources.files("pymc_sbi.benchmarks") / "data" / task / f"num_observation_{num}"
    with resources.as_file(ref / filename) as path:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    arr.setflags(write=False)
    return arr


def _sbibm_loader(task: str, filename: str, *, row: bool) -> Callable[[int], np.ndarray]:
    def load(num: int) -> np.ndarray:
        arr = _load_sbibm_csv(task, _check_num(num), filename)
        return np.array(arr[0] if row else arr)

    load.__doc__ = f"Load sbibm's ``{filename}`` of task ``{task}`` for ``num`` in 1..10."
    return load


def _float_dtype(theta: jax.Array) -> jnp.dtype:
    return jnp.promote_types(theta.dtype, jnp.float32)


# --------------------------------------------------------------------------- two moons

_TM_A_LOW, _TM_A_HIGH = -math.pi / 2.0, math.pi / 2.0
_TM_OFFSET, _TM_R_LOC, _TM_R_SCALE = 0.25, 0.1, 0.01
_TM_ANGLE = -math.pi / 4.0


def _two_moons_shift(theta: jax.Array) -> jax.Array:
    """``g(θ) = (-|z0|, z1)`` with ``z = R(-π/4) θ``."""
    c, s = math.cos(_TM_ANGLE), math.sin(_TM_ANGLE)
    z0 = c * theta[0] - s * theta[1]
    z1 = s * theta[0] + c * theta[1]
    return jnp.stack([-jnp.abs(z0), z1])


def _two_moons_prior() -> pm.Model:
    import pymc as pm

    with pm.Model() as model:
        pm.Uniform("theta", -1.0, 1.0, shape=2)
    return model


def _two_moons_simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    r"""Simulate Two Moons for one ``theta`` of shape ``(2,)``.

    .. math::

        a \sim U(-\pi/2, \pi/2),\quad r \sim N(0.1, 0.01^2),\quad
        p = (r\cos a + 0.25,\ r \sin a),\quad x = p + (-|z_0|, z_1),

    with :math:`z = R(-\pi/4)\,\theta` (rotation by :math:`-\pi/4`).
    """
    theta = jnp.asarray(theta)
    dtype = _float_dtype(theta)
    theta = theta.astype(dtype)
    key_a, key_r = jax.random.split(rng_key)
    a = jax.random.uniform(key_a, (), dtype, minval=_TM_A_LOW, maxval=_TM_A_HIGH)
    r = _TM_R_LOC + _TM_R_SCALE * jax.random.normal(key_r, (), dtype)
    p = jnp.stack([r * jnp.cos(a) + _TM_OFFSET, r * jnp.sin(a)])
    return p + _two_moons_shift(theta)


def two_moons_log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    r"""Exact log density :math:`\log p(x \mid \theta)` of the Two Moons simulator.

    Inverting the simulator, :math:`(u, v) = x - (-|z_0|, z_1) - (0.25, 0)`
    are the polar coordinates :math:`(r\cos a, r\sin a)` of the noise, so with
    :math:`r = \sqrt{u^2 + v^2}` and the polar Jacobian :math:`1/r`,

    .. math::

        p(x \mid \theta) = \frac{\mathcal N(r;\ 0.1,\ 0.01^2)}{\pi\, r}
        \quad (u > 0), \qquad 0 \text{ otherwise}.

    This is the normalised density of ``x`` (the contribution of the
    negligible :math:`r < 0` tail, :math:`P(r<0) \approx 10^{-23}`, is
    dropped). sbibm's ``TwoMoons._likelihood`` keeps only
    :math:`\log \mathcal N(r; 0.1, 0.01^2)` and the :math:`u > 0` support,
    i.e. it omits :math:`-\log(\pi r)`, which depends on ``theta`` through
    ``r``; the shipped reference posterior samples are drawn by sbibm's exact
    inversion sampler and match this (normalised) likelihood.

    Parameters
    ----------
    theta : array, shape (2,)
    x : array, shape (2,)

    Returns
    -------
    Array
        Scalar log density; ``-inf`` outside the support. Use ``jax.vmap`` for
        batches.
    """
    theta = jnp.asarray(theta)
    x = jnp.asarray(x)
    dtype = jnp.promote_types(_float_dtype(theta), _float_dtype(x))
    p = x.astype(dtype) - _two_moons_shift(theta.astype(dtype))
    u = p[0] - _TM_OFFSET
    v = p[1]
    inside = u > 0
    # Double-where keeps gradients finite outside the support.
    r = jnp.sqrt(jnp.where(inside, u**2 + v**2, 1.0))
    log_r_density = -0.5 * ((r - _TM_R_LOC) / _TM_R_SCALE) ** 2 - 0.5 * math.log(
        2.0 * math.pi * _TM_R_SCALE**2
    )
    log_p = log_r_density - jnp.log(math.pi * r)
    return jnp.where(inside, log_p, -jnp.inf)


two_moons = Task(
    name="two_moons",
    param_names=("theta[0]", "theta[1]"),
    dim_data=2,
    prior_model=_two_moons_prior,
    simulator=_two_moons_simulator,
    observation=_sbibm_loader("two_moons", "observation.csv", row=True),
    reference_samples=_sbibm_loader("two_moons", "reference_posterior_samples.csv.bz2", row=False),
    true_parameters=_sbibm_loader("two_moons", "true_parameters.csv", row=True),
    log_likelihood=two_moons_log_likelihood,
)


# --------------------------------------------------------------------------------- slcp

SLCP_NUM_DRAWS = 4
_SLCP_EPS = 1e-6  # sbibm adds 1e-6 to the covariance diagonal


def _slcp_prior() -> pm.Model:
    import pymc as pm

    with pm.Model() as model:
        pm.Uniform("theta", -3.0, 3.0, shape=5)
    return model


def slcp_moments(theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Mean ``m`` ``(2,)`` and covariance ``S`` ``(2, 2)`` of one SLCP draw.

    .. math::

        m = (\theta_1, \theta_2),\quad s_1 = \theta_3^2,\quad s_2 = \theta_4^2,\quad
        \rho = \tanh \theta_5,\quad
        S = \begin{pmatrix} s_1^2 + \epsilon & \rho s_1 s_2 \\
                             \rho s_1 s_2 & s_2^2 + \epsilon \end{pmatrix},

    :math:`\epsilon = 10^{-6}` as in sbibm (``s_1, s_2`` are standard deviations).
    """
    theta = jnp.asarray(theta)
    dtype = _float_dtype(theta)
    theta = theta.astype(dtype)
    s1, s2, rho = theta[2] ** 2, theta[3] ** 2, jnp.tanh(theta[4])
    cov = jnp.stack(
        [
            jnp.stack([s1**2 + _SLCP_EPS, rho * s1 * s2]),
            jnp.stack([rho * s1 * s2, s2**2 + _SLCP_EPS]),
        ]
    )
    return theta[:2], cov


def _slcp_simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    r"""Four i.i.d. draws :math:`x_j \sim N(m, S)` (:func:`slcp_moments`).

    Flattened to ``(8,)`` as ``(x_{1,1}, x_{1,2}, x_{2,1}, \dots)`` -- sbibm's layout.
    """
    m, cov = slcp_moments(theta)
    chol = jnp.linalg.cholesky(cov)
    eps = jax.random.normal(rng_key, (SLCP_NUM_DRAWS, 2), m.dtype)
    return (m + eps @ chol.T).reshape(-1)


def slcp_log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log p(x | theta)``: the sum of the four 2-D Gaussian log densities."""
    m, cov = slcp_moments(theta)
    x = jnp.asarray(x, m.dtype).reshape(SLCP_NUM_DRAWS, 2)
    return jnp.sum(jax.scipy.stats.multivariate_normal.logpdf(x, m, cov))


slcp = Task(
    name="slcp",
    param_names=tuple(f"theta[{i}]" for i in range(5)),
    dim_data=2 * SLCP_NUM_DRAWS,
    prior_model=_slcp_prior,
    simulator=_slcp_simulator,
    observation=_sbibm_loader("slcp", "observation.csv", row=True),
    reference_samples=_sbibm_loader("slcp", "reference_posterior_samples.csv.bz2", row=False),
    true_parameters=_sbibm_loader("slcp", "true_parameters.csv", row=True),
    log_likelihood=slcp_log_likelihood,
)


# --------------------------------------------------------------------- linear gaussian

# Likelihood covariance: marginal sd 0.5, correlation 0.6. The correlation makes
# the posterior covariance non-diagonal, so tests catch transposed/diagonal-only
# mistakes that an isotropic choice would hide.
LG_LIKELIHOOD_COV = np.array([[0.25, 0.15], [0.15, 0.25]])
_LG_CHOL = np.linalg.cholesky(LG_LIKELIHOOD_COV)
_LG_SEED = 2024


def _lg_prior() -> pm.Model:
    import pymc as pm

    with pm.Model() as model:
        pm.Normal("theta", 0.0, 1.0, shape=2)
    return model


def _lg_simulator(rng_key: jax.Array, theta: jax.Array) -> jax.Array:
    r"""``x = θ + L ε``, ``ε ~ N(0, I)``, ``L Lᵀ = Σ_lik`` (:data:`LG_LIKELIHOOD_COV`)."""
    theta = jnp.asarray(theta)
    dtype = _float_dtype(theta)
    eps = jax.random.normal(rng_key, (2,), dtype)
    return theta.astype(dtype) + jnp.asarray(_LG_CHOL, dtype) @ eps


def _lg_log_likelihood(theta: jax.Array, x: jax.Array) -> jax.Array:
    """Exact ``log N(x; θ, Σ_lik)`` for one ``theta`` and one ``x`` of shape ``(2,)``."""
    theta = jnp.asarray(theta)
    dtype = _float_dtype(theta)
    return jax.scipy.stats.multivariate_normal.logpdf(
        jnp.asarray(x, dtype), theta.astype(dtype), jnp.asarray(LG_LIKELIHOOD_COV, dtype)
    )


def linear_gaussian_posterior(x_obs_trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Analytic posterior of ``linear_gaussian`` given ``n`` i.i.d. trials.

    With prior :math:`\theta \sim N(0, I)` and :math:`x_i \mid \theta \sim
    N(\theta, \Sigma)`, :math:`i = 1..n`, the posterior is Gaussian with

    .. math::

        \Sigma_{\text{post}} = (I + n \Sigma^{-1})^{-1}, \qquad
        \mu_{\text{post}} = \Sigma_{\text{post}}\, \Sigma^{-1} \sum_i x_i.

    Parameters
    ----------
    x_obs_trials : array, shape (n, 2) or (2,)
        Observed trials; ``(2,)`` means a single trial.

    Returns
    -------
    mean : np.ndarray, shape (2,)
    cov : np.ndarray, shape (2, 2)
    """
    x = np.atleast_2d(np.asarray(x_obs_trials, dtype=np.float64))
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 1:
        raise ValueError(f"x_obs_trials must have shape (n, 2) or (2,); got {x.shape}.")
    lik_prec = np.linalg.inv(LG_LIKELIHOOD_COV)
    cov = np.linalg.inv(np.eye(2) + x.shape[0] * lik_prec)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (lik_prec @ x.sum(axis=0))
    return mean, cov


def _lg_true_parameters(num: int) -> np.ndarray:
    """``θ* ~ N(0, I)`` drawn with a fixed seed per observation number."""
    rng = np.random.default_rng([_LG_SEED, _check_num(num)])
    return rng.standard_normal(2)


def _lg_observation(num: int) -> np.ndarray:
    """One simulated ``x`` at ``θ*`` with a fixed seed per observation number."""
    rng = np.random.default_rng([_LG_SEED, _check_num(num), 1])
    return _lg_true_parameters(num) + _LG_CHOL @ rng.standard_normal(2)


def _lg_posterior_mean(num: int) -> np.ndarray:
    return linear_gaussian_posterior(_lg_observation(num))[0]


def _lg_posterior_cov(num: int) -> np.ndarray:
    return linear_gaussian_posterior(_lg_observation(num))[1]


def _lg_reference_samples(num: int) -> np.ndarray:
    """10000 exact posterior draws (fixed seed per observation number)."""
    mean, cov = linear_gaussian_posterior(_lg_observation(num))
    rng = np.random.default_rng([_LG_SEED, _check_num(num), 2])
    eps = rng.standard_normal((NUM_REFERENCE_SAMPLES, 2))
    return mean + eps @ np.linalg.cholesky(cov).T


linear_gaussian = Task(
    name="linear_gaussian",
    param_names=("theta[0]", "theta[1]"),
    dim_data=2,
    prior_model=_lg_prior,
    simulator=_lg_simulator,
    observation=_lg_observation,
    reference_samples=_lg_reference_samples,
    true_parameters=_lg_true_parameters,
    log_likelihood=_lg_log_likelihood,
    posterior_mean=_lg_posterior_mean,
    posterior_cov=_lg_posterior_cov,
    analytic_posterior=linear_gaussian_posterior,
)


# ---------------------------------------------------------------------------- registry

TASKS: dict[str, Task] = {task.name: task for task in (two_moons, slcp, linear_gaussian)}


def get_task(name: str) -> Task:
    """Look up a benchmark task by name.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the available tasks.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(
            f"Unknown task {name!r}. Available tasks: {', '.join(sorted(TASKS))}."
        ) from None
