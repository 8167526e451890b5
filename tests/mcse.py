r"""Monte-Carlo-standard-error assertions shared by the statistical tests.

A Monte Carlo estimate (a mean, a standard deviation, a frequency) of a quantity
whose exact value is known should differ from it by a few Monte Carlo standard
errors (MCSE), and by nothing else. These helpers state that once:

.. math::

    |\hat\mu - \mu| \le z \cdot \mathrm{MCSE} + \text{allowance}

coordinate by coordinate, with the MCSE computed from the draws themselves
(blackjax's ``MonteCarloStandardErrorTest`` in ``tests/mcmc/test_sampling.py``
is the model). ``z = 4`` is the default everywhere: for an estimate that is
Gaussian by the central limit theorem, :math:`P(|Z| > 4) = 6.3 \times 10^{-5}`,
the two-sided false-failure rate per coordinate (the tests use fixed seeds, so
this is the chance that a seed is unlucky, not a flake rate).

``allowance`` is for errors that are *not* Monte Carlo: a trained surrogate's
bias, a quadrature grid, an optimiser stopped early. It is zero unless a test
names it, next to the quantity it covers, with where its size came from.

Draws are either i.i.d., shaped ``(n, ...)``, or MCMC chains, shaped
``(chains, draws, ...)`` (``chains=True``); the trailing axes are coordinates,
each tested on its own.

Usage from any test folder (``tests/`` is on ``sys.path`` through
``tests/conftest.py``, as for ``race_helpers``)::

    from mcse import assert_mean_within_mcse, assert_sd_within_mcse

With ``MCSE_REPORT=1`` in the environment every check prints its estimate,
expected value, MCSE and bound (run pytest with ``-s`` to see them): how much
room a test has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import arviz
import numpy as np

Z = 4.0  # two-sided false-failure rate 2 * (1 - Phi(4)) = 6.3e-5 per coordinate


@dataclass(frozen=True)
class MCSECheck:
    """What an assertion compared (arrays over the coordinates), for printing.

    Attributes
    ----------
    estimate : np.ndarray
        The Monte Carlo estimate.
    expected : np.ndarray
        The exact value it was compared with.
    mcse : np.ndarray
        Its Monte Carlo standard error.
    bound : np.ndarray
        ``z * mcse + allowance``, the largest error allowed.
    """

    estimate: np.ndarray
    expected: np.ndarray
    mcse: np.ndarray
    bound: np.ndarray

    @property
    def z_score(self) -> np.ndarray:
        """``|estimate - expected| / mcse``: the error in Monte Carlo standard errors."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(self.estimate - self.expected) / self.mcse


def _sample_axes(chains: bool) -> tuple[int, ...]:
    return (0, 1) if chains else (0,)


def effective_sample_size(draws, *, chains: bool = False) -> np.ndarray:
    r"""Effective sample size of the mean of ``draws``, per coordinate.

    Parameters
    ----------
    draws : array_like
        ``(n, ...)`` i.i.d. draws, or ``(chains, draws, ...)`` MCMC draws when
        ``chains=True``.
    chains : bool, default False
        Whether the first two axes are chains and draws.

    Returns
    -------
    np.ndarray
        Shape ``draws.shape[1:]`` (i.i.d., filled with ``n``) or
        ``draws.shape[2:]`` (chains).

    Notes
    -----
    For i.i.d. draws the ESS is ``n`` exactly. For chains it is ArviZ's
    classic (not rank-normalised) ESS of the mean (``arviz.ess(draws, method="mean")``, with
    ``chain_axis=0, draw_axis=1``; the array interface of ``arviz_stats``):
    :math:`\mathrm{ESS} = CD / \hat\tau`, where :math:`\hat\tau = 1 + 2
    \sum_t \hat\rho_t` is the integrated autocorrelation time estimated
    from the split chains with Geyer's initial monotone sequence.
    """
    draws = np.asarray(draws, np.float64)
    if not chains:
        return np.full(draws.shape[1:], float(draws.shape[0]))
    if draws.ndim < 2:
        raise ValueError(f"chains=True needs (chains, draws, ...) draws, got {draws.shape}")
    return np.asarray(arviz.ess(draws, method="mean", chain_axis=0, draw_axis=1), np.float64)


def _mean_and_mcse(draws, chains):
    draws = np.asarray(draws, np.float64)
    axes = _sample_axes(chains)
    sd = draws.std(axis=axes, ddof=1)
    return draws.mean(axis=axes), sd / np.sqrt(effective_sample_size(draws, chains=chains))


def _check(estimate, expected, mcse, allowance, z, what) -> MCSECheck:
    estimate, mcse = np.asarray(estimate, np.float64), np.asarray(mcse, np.float64)
    expected = np.broadcast_to(np.asarray(expected, np.float64), estimate.shape)
    allowance = np.broadcast_to(np.asarray(allowance, np.float64), estimate.shape)
    if np.any(allowance < 0):
        raise ValueError("allowance must be >= 0")
    bound = z * mcse + allowance
    err = np.abs(estimate - expected)
    ok = err <= bound  # NaN anywhere fails
    if not np.all(ok):
        with np.errstate(divide="ignore", invalid="ignore"):
            in_mcse = err / mcse
        lines = [
            f"{what} is not within z * MCSE + allowance of its exact value (z = {z:g}):",
            "  coordinate    estimate    expected        MCSE  error/MCSE   allowance  ok",
        ]
        for idx in np.ndindex(estimate.shape):
            lines.append(
                f"  {idx!s:>10} {estimate[idx]:11.5g} {expected[idx]:11.5g} {mcse[idx]:11.4g}"
                f" {in_mcse[idx]:11.2f} {allowance[idx]:11.4g}  {bool(ok[idx])}"
            )
        raise AssertionError("\n".join(lines))
    if os.environ.get("MCSE_REPORT"):
        with np.errstate(divide="ignore", invalid="ignore"):
            print(
                f"[mcse] {what}: estimate {np.round(estimate, 5).tolist()}"
                f" expected {np.round(expected, 5).tolist()} MCSE {np.round(mcse, 5).tolist()}"
                f" bound {np.round(bound, 5).tolist()} error/bound"
                f" {np.round(err / bound, 2).tolist()}"
            )
    return MCSECheck(estimate, expected, mcse, bound)


def assert_mean_within_mcse(
    draws, expected, *, allowance=0.0, z: float = Z, chains: bool = False
) -> MCSECheck:
    r"""Assert that the mean of ``draws`` is within ``z`` MCSE (+ ``allowance``) of ``expected``.

    Per coordinate, :math:`|\bar x - \mu| \le z\, s / \sqrt{\mathrm{ESS}} + a`,
    with :math:`s` the sample standard deviation (``ddof=1``) and ESS from
    :func:`effective_sample_size`.

    Parameters
    ----------
    draws : array_like
        ``(n, ...)`` i.i.d. draws or ``(chains, draws, ...)`` with ``chains=True``.
    expected : array_like
        The exact mean, broadcastable to the coordinates.
    allowance : float or array_like, default 0
        Non-Monte-Carlo error allowed on top (same units as the draws); name it
        in the test, next to the quantity it covers.
    z : float, default 4
        Number of standard errors; ``z = 4`` gives a two-sided false-failure
        rate of :math:`6.3 \times 10^{-5}` per coordinate.
    chains : bool, default False
        Whether the first two axes are chains and draws.

    Returns
    -------
    MCSECheck
        The estimate, expected value, MCSE and bound, for printing.

    Raises
    ------
    AssertionError
        With the mean, expected value, MCSE, error in MCSE and allowance of
        every coordinate.
    """
    mean, mcse = _mean_and_mcse(draws, chains)
    return _check(mean, expected, mcse, allowance, z, "the mean")


def assert_sd_within_mcse(
    draws, expected_sd, *, allowance=0.0, z: float = Z, chains: bool = False
) -> MCSECheck:
    r"""Assert that the sd of ``draws`` is within ``z`` MCSE (+ ``allowance``) of ``expected_sd``.

    The MCSE of the sample standard deviation :math:`s` follows from the delta
    method: :math:`s^2` is the mean of the squared deviations
    :math:`(x - \bar x)^2`, whose variance is :math:`\sigma^4 (\kappa - 1)`, so

    .. math::

        \mathrm{MCSE}(s) \approx s \sqrt{\frac{\kappa - 1}{4\, \mathrm{ESS}}},

    with :math:`\kappa = m_4 / m_2^2` the sample kurtosis (3 for a Gaussian, where
    this is :math:`s / \sqrt{2\,\mathrm{ESS}}`) and ESS that of the squared
    deviations (``n`` for i.i.d. draws). This is ArviZ's ``mcse(method="sd")``.

    Parameters
    ----------
    draws : array_like
        ``(n, ...)`` i.i.d. draws or ``(chains, draws, ...)`` with ``chains=True``.
    expected_sd : array_like
        The exact standard deviation, broadcastable to the coordinates.
    allowance : float or array_like, default 0
        Non-Monte-Carlo error allowed on top (same units as the draws).
    z : float, default 4
        Number of standard errors (false-failure rate :math:`6.3 \times 10^{-5}`).
    chains : bool, default False
        Whether the first two axes are chains and draws.

    Returns
    -------
    MCSECheck
        The estimate, expected value, MCSE and bound, for printing.

    Raises
    ------
    AssertionError
        With the sd, expected sd, MCSE, error in MCSE and allowance of every
        coordinate.
    """
    draws = np.asarray(draws, np.float64)
    axes = _sample_axes(chains)
    sq_dev = (draws - draws.mean(axis=axes, keepdims=True)) ** 2
    m2, m4 = sq_dev.mean(axis=axes), (sq_dev**2).mean(axis=axes)
    kurtosis = m4 / m2**2
    sd = draws.std(axis=axes, ddof=1)
    ess = effective_sample_size(sq_dev, chains=chains)
    mcse = sd * np.sqrt((kurtosis - 1) / (4 * ess))
    return _check(sd, expected_sd, mcse, allowance, z, "the standard deviation")


def assert_cov_within_mcse(
    draws, expected_mean, expected_cov, *, allowance=0.0, z: float = Z, chains: bool = False
) -> MCSECheck:
    r"""Assert that the covariance of ``(..., d)`` draws is within ``z`` MCSE of ``expected_cov``.

    Entry :math:`(i, j)` is estimated as the mean of the products
    :math:`(x_i - \mu_i)(x_j - \mu_j)` about the *exact* mean :math:`\mu`, an
    unbiased estimate of :math:`\Sigma_{ij}` (it differs from ``np.cov`` by
    :math:`(\bar x_i - \mu_i)(\bar x_j - \mu_j)`, of order 1/ESS, far below
    its MCSE) and checked as :func:`assert_mean_within_mcse` checks a mean: the MCSE is
    :math:`\mathrm{sd}(\text{product}) / \sqrt{\mathrm{ESS}}`, for a Gaussian
    :math:`\sqrt{(\Sigma_{ij}^2 + \Sigma_{ii}\Sigma_{jj}) / \mathrm{ESS}}`. As in
    blackjax's ``MonteCarloStandardErrorTest``. The draws need finite fourth
    moments (not a Student-t with 4 degrees of freedom or fewer).

    Parameters
    ----------
    draws : array_like
        ``(n, d)`` i.i.d. draws or ``(chains, draws, d)`` with ``chains=True``.
    expected_mean : array_like
        The exact mean, shape ``(d,)``.
    expected_cov : array_like
        The exact covariance, shape ``(d, d)``.
    allowance : float or array_like, default 0
        Non-Monte-Carlo error allowed on top, broadcastable to ``(d, d)``.
    z : float, default 4
        Number of standard errors (false-failure rate :math:`6.3 \times 10^{-5}`).
    chains : bool, default False
        Whether the first two axes are chains and draws.

    Returns
    -------
    MCSECheck
        Over the ``(d, d)`` entries.
    """
    dev = np.asarray(draws, np.float64) - np.asarray(expected_mean, np.float64)
    products = dev[..., :, None] * dev[..., None, :]
    estimate, mcse = _mean_and_mcse(products, chains)
    return _check(estimate, expected_cov, mcse, allowance, z, "the covariance")


def assert_prob_within_mcse(k, n, p, *, allowance=0.0, z: float = Z) -> MCSECheck:
    r"""Assert that the frequency ``k / n`` is within ``z`` binomial MCSE of the probability ``p``.

    Per coordinate, :math:`|k/n - p| \le z \sqrt{p (1 - p) / n} + a`: the
    standard error of a binomial proportion under the hypothesis (coverage
    counts, acceptance counts, category frequencies). For independent trials
    with unequal probabilities :math:`p_i` of mean :math:`p` the variance is
    smaller, :math:`\sum p_i (1 - p_i) / n^2 \le p (1 - p) / n`, so the bound
    stays valid.

    Parameters
    ----------
    k : array_like
        Number of successes (need not be an integer: a frequency times ``n``).
    n : int or array_like
        Number of independent trials.
    p : array_like
        The exact probability.
    allowance : float or array_like, default 0
        Non-Monte-Carlo error allowed on top (a probability).
    z : float, default 4
        Number of standard errors (false-failure rate :math:`6.3 \times 10^{-5}`).

    Returns
    -------
    MCSECheck
        The frequency, probability, MCSE and bound, for printing.
    """
    k, n, p = (np.asarray(a, np.float64) for a in (k, n, p))
    freq = k / n
    mcse = np.broadcast_to(np.sqrt(p * (1 - p) / n), freq.shape)
    return _check(freq, p, mcse, allowance, z, "the frequency")
