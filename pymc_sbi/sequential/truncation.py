r"""The prior truncated to the highest-density region of a posterior (TSNPE).

Truncated sequential NPE (Deistler et al., 2022) draws the parameters of later
rounds not from the posterior estimate but from the *prior restricted to the
estimate's highest-density region* (HPR):

.. math::

    \tilde p(\theta) = \frac{p(\theta)\,\mathbf 1[\theta \in \mathrm{HPR}_\epsilon]}
                            {P_p(\mathrm{HPR}_\epsilon)}, \qquad
    \mathrm{HPR}_\epsilon = \{\theta : \log \hat p(\theta \mid x_o) \ge \tau_\epsilon\},

where :math:`\tau_\epsilon` is the :math:`\epsilon`-quantile of
:math:`\log \hat p(\theta_i \mid x_o)` over draws :math:`\theta_i \sim \hat p(\theta \mid x_o)`
(so the region holds mass :math:`1 - \epsilon` of the estimate; sbi's default
:math:`\epsilon = 10^{-4}`).  Inside the region the proposal is proportional
to the prior, so an NPE trained on the pooled rounds by plain maximum
likelihood learns :math:`p(\theta \mid x)` for every :math:`x` whose posterior
lies inside the region -- :math:`x_o`'s included, if the region covers its
posterior -- and no proposal correction (atoms, importance weights) is needed.
Only the density up to a constant matters: ``log_density_fn`` may be an
unnormalised posterior (prior times a neural likelihood, as in sequential
NLE/NRE), since :math:`\tau_\epsilon` is computed on the same scale.

:func:`hpr_threshold` computes :math:`\tau_\epsilon`; :func:`sample_truncated_prior`
draws from :math:`\tilde p` by rejection from the prior and estimates
:math:`P_p(\mathrm{HPR}_\epsilon)` by the acceptance rate.

References
----------
M. Deistler, P. Gonçalves, J. Macke, "Truncated proposals for scalable and
hassle-free simulation-based inference", NeurIPS 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from pymc_sbi.prior import prior_draw_fn

__all__ = ["TruncatedDraws", "hpr_threshold", "sample_truncated_prior"]


class TruncatedDraws(NamedTuple):
    """Output of :func:`sample_truncated_prior`.

    Attributes
    ----------
    theta
        ``(n, d)`` prior draws inside the region.
    acceptance_rate
        Fraction of prior draws inside the region: an estimate of its prior mass.
    threshold
        The log-density threshold of the region.
    n_drawn
        Prior draws made in all.
    """

    theta: np.ndarray
    acceptance_rate: float
    threshold: float
    n_drawn: int


def hpr_threshold(log_density_samples, quantile: float = 1e-4) -> float:
    r"""The threshold :math:`\tau` of the HPR holding mass ``1 - quantile``.

    Parameters
    ----------
    log_density_samples
        :math:`\log \hat p(\theta_i \mid x_o)` at draws :math:`\theta_i` of the
        posterior estimate itself (any additive constant, the same as the one
        the acceptance test uses).
    quantile
        :math:`\epsilon` in ``(0, 1)``: the mass left outside the region.

    Returns
    -------
    float
        The ``quantile``-quantile of the finite values (linear interpolation).
        With fewer than :math:`1/\epsilon` samples this is (close to) the
        smallest value: the region then holds all the draws.
    """
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    values = np.asarray(log_density_samples, np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ValueError(
            f"Need at least 2 finite log densities of posterior draws, got {values.size}."
        )
    return float(np.quantile(values, float(quantile)))


def sample_truncated_prior(
    prior,
    log_density_fn: Callable[[np.ndarray], np.ndarray],
    threshold: float,
    n: int,
    seed: int = 0,
    *,
    batch: int = 10_000,
    min_acceptance: float = 1e-5,
    max_draws: int = 50_000_000,
) -> TruncatedDraws:
    r"""Draw ``n`` parameters from the prior restricted to ``log_density_fn >= threshold``.

    Parameters
    ----------
    prior
        The prior ``pm.Model`` (all its free variables, flattened in
        :func:`~pymc_sbi.param_spec` order).
    log_density_fn
        ``theta (B, d) -> (B,)`` log density defining the region (NumPy in and
        out; evaluated on batches of ``batch`` prior draws).
    threshold
        :math:`\tau` from :func:`hpr_threshold`.
    n
        Number of draws wanted.
    seed
        Seeds the prior draws.
    batch
        Prior draws per evaluation of ``log_density_fn``.
    min_acceptance
        After ``10 / min_acceptance`` draws, an acceptance rate below this
        raises (the region is too small a part of the prior for rejection).
    max_draws
        Upper bound on prior draws.

    Returns
    -------
    TruncatedDraws

    Raises
    ------
    RuntimeError
        When the acceptance rate is below ``min_acceptance`` or ``max_draws``
        is reached; the message gives the rate and what to change.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}.")
    draw = prior_draw_fn(prior, int(batch), seed=seed)
    kept: list[np.ndarray] = []
    n_kept = n_inside = n_drawn = 0
    while n_kept < n:
        theta = draw()
        logd = np.asarray(log_density_fn(theta), np.float64).reshape(-1)
        inside = np.isfinite(logd) & (logd >= threshold)
        n_drawn += theta.shape[0]
        n_inside += int(inside.sum())
        take = theta[inside][: n - n_kept]
        kept.append(take)
        n_kept += take.shape[0]
        rate = n_inside / n_drawn
        if n_kept < n and (
            (n_drawn >= 10.0 / min_acceptance and rate < min_acceptance) or n_drawn >= max_draws
        ):
            raise RuntimeError(
                f"Only {n_inside} of {n_drawn} prior draws (rate {rate:.2e}) fall in the "
                f"region log density >= {threshold:.3g}; rejection from the prior is too "
                "slow. Use the posterior as proposal (truncation=None), a larger quantile, or "
                "raise min_acceptance / max_draws."
            )
    return TruncatedDraws(np.concatenate(kept), n_inside / n_drawn, float(threshold), n_drawn)
