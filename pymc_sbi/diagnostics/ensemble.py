"""How much the members of an ensemble disagree: an epistemic-uncertainty diagnostic."""

from __future__ import annotations

import numpy as np

from pymc_sbi.estimator import Estimator

__all__ = ["disagreement_summary"]


def disagreement_summary(estimator: Estimator, x, theta, covariates=None) -> dict[str, float]:
    r"""Summary of :meth:`~pymc_sbi.Estimator.disagreement` over a set of points.

    Parameters
    ----------
    estimator
        An ensemble estimator (``members`` set).
    x, theta, covariates
        Points, as for :meth:`~pymc_sbi.Estimator.log_prob` (e.g. held-out
        simulations, or the observations with posterior draws).

    Returns
    -------
    dict
        ``mean``, ``median``, ``q90`` and ``max`` of the per-point standard
        deviation over members of :math:`\log q_e` (nats).
    """
    s = np.asarray(estimator.disagreement(x, theta, covariates), np.float64).ravel()
    return {
        "mean": float(np.mean(s)),
        "median": float(np.median(s)),
        "q90": float(np.quantile(s, 0.9)),
        "max": float(np.max(s)),
    }
