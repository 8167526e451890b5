r"""Log-normal race model: a choice + reaction-time simulator with an exact likelihood.

Two accumulators race to a bound; accumulator :math:`k \in \{0, 1\}` finishes
at :math:`T_k = \exp(\mu_k + \sigma \varepsilon_k)`, :math:`\varepsilon_k \sim
\mathcal N(0, 1)`, and the response is the winner :math:`k^* = \arg\min_k T_k`
at time :math:`\mathrm{rt} = \min_k T_k` (Rouder, Province, Morey, Gomez &
Heathcote 2015, "The lognormal race"). A per-trial covariate, the signed
stimulus strength :math:`s \in [-1, 1]`, speeds the matching accumulator:

.. math:: \mu_1 = b - v s, \qquad \mu_0 = b + v s,

with parameters :math:`\theta = (v, b, \sigma)`: sensitivity, baseline
log-time and noise. The exact likelihood of one trial is

.. math::

    p(\mathrm{rt}, k \mid \theta, s) =
        \mathrm{LogNormal}(\mathrm{rt}; \mu_k, \sigma)\,
        \bigl[1 - \Phi\bigl((\log \mathrm{rt} - \mu_{1-k}) / \sigma\bigr)\bigr],

so a PyMC model with the exact likelihood is the ground truth for a neural
(MNLE) surrogate trained on single simulated trials. Data are
``x = (rt, k)``: the continuous column first, the choice last, as MNLE expects.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.distributions.dist_math import normal_lccdf

__all__ = [
    "PRIOR_BOUNDS",
    "exact_log_likelihood",
    "exact_log_likelihood_np",
    "hierarchical_data",
    "prior_model",
    "simulator",
    "stimulus_design",
]

#: Uniform training prior of one subject's parameters.
PRIOR_BOUNDS = {"v": (0.0, 2.0), "b": (-1.5, 0.5), "sigma": (0.3, 1.2)}


def prior_model() -> pm.Model:
    """Uniform training prior over ``v``, ``b``, ``sigma`` (:data:`PRIOR_BOUNDS`)."""
    with pm.Model() as model:
        for name, (lo, hi) in PRIOR_BOUNDS.items():
            pm.Uniform(name, lo, hi)
    return model


def stimulus_design(rng: np.random.Generator, n: int) -> np.ndarray:
    r"""Training design of the covariate: :math:`s \sim \mathrm{Uniform}(-1, 1)`, ``(n, 1)``."""
    return rng.uniform(-1.0, 1.0, size=(n, 1))


def simulator(rng_key, theta, s):
    """One trial ``x = (rt, k)`` for ``theta = (v, b, sigma)`` and covariate ``s`` ``(1,)``."""
    v, b, sigma = theta[0], theta[1], theta[2]
    mu = jnp.stack([b + v * s[0], b - v * s[0]])
    t = jnp.exp(mu + sigma * jax.random.normal(rng_key, (2,), dtype=mu.dtype))
    k = jnp.argmin(t)
    return jnp.stack([t[k], k.astype(t.dtype)])


def exact_log_likelihood(rt, k, v, b, sigma, s):
    """Per-trial exact log-likelihood as a PyTensor graph (all arguments broadcast)."""
    mu1, mu0 = b - v * s, b + v * s
    mu_win = pt.switch(pt.eq(k, 1), mu1, mu0)
    mu_lose = pt.switch(pt.eq(k, 1), mu0, mu1)
    log_rt = pt.log(rt)
    log_pdf = (
        -0.5 * ((log_rt - mu_win) / sigma) ** 2
        - pt.log(sigma)
        - log_rt
        - 0.5 * math.log(2 * math.pi)
    )
    return log_pdf + normal_lccdf(mu_lose, sigma, log_rt)


def exact_log_likelihood_np(rt, k, v, b, sigma, s):
    """NumPy version of :func:`exact_log_likelihood` (for tests and quadrature)."""
    from scipy.stats import norm

    mu1, mu0 = b - v * s, b + v * s
    mu_win = np.where(k == 1, mu1, mu0)
    mu_lose = np.where(k == 1, mu0, mu1)
    log_rt = np.log(rt)
    return norm.logpdf(log_rt, mu_win, sigma) - log_rt + norm.logsf(log_rt, mu_lose, sigma)


def hierarchical_data(n_subjects: int, n_trials: int, seed: int = 0, ragged: bool = False):
    """Synthetic hierarchical data set.

    Subject parameters ``v_j ~ N(1, 0.25)``, ``b_j ~ N(-0.5, 0.2)`` (clipped to the
    training box), shared ``sigma = 0.6``; stimulus strengths uniform on a grid
    of 8 signed levels. With ``ragged=True`` subjects get between ``n_trials // 2``
    and ``n_trials`` trials.

    Returns
    -------
    dict
        ``x`` ``(N, 2)`` (rt, choice), ``s`` ``(N,)``, ``subject`` ``(N,)`` int,
        and the true ``v`` ``(J,)``, ``b`` ``(J,)``, ``sigma``.
    """
    rng = np.random.default_rng(seed)
    v = np.clip(rng.normal(1.0, 0.25, n_subjects), 0.05, 1.95)
    b = np.clip(rng.normal(-0.5, 0.2, n_subjects), -1.45, 0.45)
    sigma = 0.6
    counts = (
        rng.integers(n_trials // 2, n_trials + 1, n_subjects)
        if ragged
        else np.full(n_subjects, n_trials)
    )
    subject = np.repeat(np.arange(n_subjects), counts)
    levels = np.array([-0.8, -0.4, -0.2, -0.05, 0.05, 0.2, 0.4, 0.8])
    s = rng.choice(levels, subject.size)
    mu = np.stack([b[subject] + v[subject] * s, b[subject] - v[subject] * s], -1)
    t = np.exp(mu + sigma * rng.normal(size=mu.shape))
    k = t.argmin(-1)
    x = np.stack([t.min(-1), k.astype(float)], -1)
    return {"x": x, "s": s, "subject": subject, "v": v, "b": b, "sigma": sigma}
