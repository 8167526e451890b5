r"""Expected coverage of highest-posterior-density regions, and TARP.

Both checks reduce each of :math:`N` simulated datasets to one number
:math:`f_n \in [0, 1]`, the credibility level at which the true parameter
:math:`\theta^*_n` just enters a credible region of the approximate posterior:

- **HPD expected coverage** [1]_: :math:`f_n = \frac1L \sum_l
  \mathbb 1[\hat p(\theta_{n,l} \mid x_n) > \hat p(\theta^*_n \mid x_n)]`, the
  posterior mass of points denser than :math:`\theta^*_n`, so that
  :math:`\theta^*_n` lies in the :math:`\alpha`-HPD region iff :math:`f_n \le \alpha`.
  (In practice counts become :math:`(\text{count} + 1/2) / (L + 1)`, uniform
  under calibration for any :math:`L`.)
  Needs (unnormalised) log densities at the draws and at :math:`\theta^*`.
- **TARP** [2]_ (tests of accuracy with random points): with a random
  reference point :math:`r_n` per dataset, :math:`f_n = \frac1L \sum_l
  \mathbb 1[\lVert\theta_{n,l} - r_n\rVert < \lVert\theta^*_n - r_n\rVert]`.
  Needs only samples; a necessary and sufficient test of calibration over the
  distribution of reference points.

The empirical coverage at level :math:`\alpha` is
:math:`C(\alpha) = \frac1N \sum_n \mathbb 1[f_n \le \alpha]`, the ECDF of the
:math:`f_n`. A calibrated posterior has :math:`f_n \sim U(0, 1)` and
:math:`C(\alpha) = \alpha` (the diagonal); :math:`C(\alpha) < \alpha` means
over-confident, :math:`C(\alpha) > \alpha` under-confident. Because the
:math:`f_n` are independent uniforms under calibration, the simultaneous
band of the curve is the ECDF band of arviz-stats (the one used for SBC
rank ECDFs, Säilynoja et al. 2022).

References
----------
.. [1] Hermans, J., Delaunoy, A., Rozet, F., Wehenkel, A., Begy, V. and
   Louppe, G. (2022). A crisis in simulation-based inference? Beware, your
   posterior approximations can be unfaithful. TMLR.
.. [2] Lemos, P., Coogan, A., Hezaveh, Y. and Perreault-Levasseur, L. (2023).
   Sampling-based accuracy testing of posterior estimators for general
   inference. ICML.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["CoverageCurve", "coverage_curve", "expected_coverage", "hpd_levels", "tarp"]


class CoverageCurve(NamedTuple):
    r"""Empirical coverage against credibility level.

    Attributes
    ----------
    levels
        ``(K,)`` credibility levels :math:`\alpha` in ``[0, 1]``.
    coverage
        ``(K,)`` empirical coverage :math:`C(\alpha)`.
    lower, upper
        ``(K,)`` simultaneous ``band_prob`` band of :math:`C` under calibration.
    f
        ``(N,)`` per-dataset levels :math:`f_n`.
    band_prob
        Probability of the band.
    kind
        ``"hpd"`` or ``"tarp"``.
    """

    levels: np.ndarray
    coverage: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    f: np.ndarray
    band_prob: float
    kind: str

    @property
    def max_error(self) -> float:
        r"""Largest :math:`|C(\alpha) - \alpha|`."""
        return float(np.max(np.abs(self.coverage - self.levels)))

    @property
    def area(self) -> float:
        r"""Signed area :math:`\int (C(\alpha) - \alpha) d\alpha`: < 0 over-confident."""
        return float(np.mean(self.coverage - self.levels))

    @property
    def inside_band(self) -> bool:
        """Whether the whole curve lies in the simultaneous band (calibration not rejected)."""
        return bool(np.all((self.coverage >= self.lower) & (self.coverage <= self.upper)))


def _ecdf_band(n: int, levels: np.ndarray, band_prob: float, seed: int):
    """Simultaneous band of the ECDF of ``n`` uniforms at ``levels`` (arviz-stats' method)."""
    from arviz_stats.ecdf_utils import get_pointwise_confidence_band, simulate_confidence_bands

    inner = np.clip(levels, 1e-12, 1 - 1e-12)
    prob = simulate_confidence_bands(
        n, 1, inner, band_prob, 1000, np.random.default_rng(seed)
    )  # pointwise level that gives the simultaneous one
    lower, upper = get_pointwise_confidence_band(prob, n, inner)
    lower = np.where(levels <= 0, 0.0, lower)
    upper = np.where(levels >= 1, 1.0, upper)
    return lower, upper


def coverage_curve(
    f, *, levels=None, band_prob: float = 0.95, kind: str = "hpd", seed: int = 0
) -> CoverageCurve:
    r"""Coverage curve :math:`C(\alpha) = \frac1N\sum_n \mathbb 1[f_n \le \alpha]` of levels ``f``.

    Parameters
    ----------
    f
        ``(N,)`` per-dataset levels in ``[0, 1]``.
    levels
        Credibility levels (default 101 points ``0, 0.01, ..., 1``).
    band_prob
        Probability of the simultaneous band under calibration.
    seed
        Seed of the band's simulation.
    """
    f = np.asarray(f, np.float64)
    if f.ndim != 1 or f.size < 2 or np.any((f < 0) | (f > 1)) or not np.all(np.isfinite(f)):
        raise ValueError(f"f must be an (N,) array of levels in [0, 1] with N >= 2; got {f.shape}.")
    levels = np.linspace(0.0, 1.0, 101) if levels is None else np.asarray(levels, np.float64)
    if levels.ndim != 1 or np.any((levels < 0) | (levels > 1)):
        raise ValueError("levels must be a 1-d array of values in [0, 1].")
    if not 0.0 < band_prob < 1.0:
        raise ValueError(f"band_prob must be in (0, 1); got {band_prob}.")
    cover = np.mean(f[None, :] <= levels[:, None], axis=1)
    lower, upper = _ecdf_band(f.size, levels, band_prob, seed)
    return CoverageCurve(levels, cover, lower, upper, f, float(band_prob), kind)


def _level(count: np.ndarray, num_samples: int) -> np.ndarray:
    r"""Count of ``L`` draws -> level ``(count + 0.5) / (L + 1)``.

    Under calibration the count is uniform on ``0..L``; the mid-point keeps
    :math:`f_n` strictly inside ``(0, 1)`` and uniform to within ``1 / (2(L+1))``,
    so the curve does not jump at :math:`\alpha = 0`.
    """
    return (count + 0.5) / (num_samples + 1)


def hpd_levels(log_density_samples, log_density_true) -> np.ndarray:
    r"""Per-dataset HPD level :math:`f_n` of the true parameter.

    Parameters
    ----------
    log_density_samples
        ``(N, L)`` log posterior density (up to a constant per dataset) at the
        posterior draws.
    log_density_true
        ``(N,)`` the same log density at :math:`\theta^*_n`.

    Returns
    -------
    np.ndarray
        ``(N,)`` fraction of draws denser than :math:`\theta^*_n`, as
        ``(count + 0.5) / (L + 1)``.
    """
    ls = np.asarray(log_density_samples, np.float64)
    lt = np.asarray(log_density_true, np.float64)
    if ls.ndim != 2 or lt.shape != ls.shape[:1]:
        raise ValueError(
            f"log_density_samples must be (N, L) and log_density_true (N,); got {ls.shape} "
            f"and {lt.shape}."
        )
    return _level(np.sum(ls > lt[:, None], axis=1), ls.shape[1])


def expected_coverage(result: Any, **kwargs: Any) -> CoverageCurve:
    """HPD expected coverage of an :class:`~pymc_sbi.diagnostics.SBCResult`.

    ``kwargs`` go to :func:`coverage_curve`. Raises if the result carries no
    log densities.
    """
    if result.log_density_true is None or result.log_density_samples is None:
        raise ValueError(
            "Expected coverage needs log densities at the draws and at theta*; this SBC result "
            "has none (give log_density_true/log_density_samples to sbc_from_samples)."
        )
    f = hpd_levels(result.log_density_samples, result.log_density_true)
    return coverage_curve(f, kind="hpd", **kwargs)


def tarp(
    theta_true,
    posterior_samples,
    *,
    references=None,
    normalize: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> CoverageCurve:
    r"""TARP expected coverage (Lemos et al. 2023).

    Parameters
    ----------
    theta_true
        ``(N, d)`` true parameters.
    posterior_samples
        ``(N, L, d)`` posterior draws per dataset.
    references
        ``(N, d)`` reference points :math:`r_n`; default: uniform on the
        bounding box of ``theta_true`` (in normalised units if ``normalize``).
    normalize
        Rescale every coordinate to ``[0, 1]`` with the min and max of
        ``theta_true`` first, so no parameter dominates the distances.
    seed
        Seed of the reference points and of the band.
    kwargs
        Passed to :func:`coverage_curve` (``levels``, ``band_prob``).

    Returns
    -------
    CoverageCurve
    """
    theta = np.asarray(theta_true, np.float64)
    samples = np.asarray(posterior_samples, np.float64)
    if theta.ndim != 2 or samples.ndim != 3 or samples.shape[::2] != theta.shape:
        raise ValueError(
            f"theta_true must be (N, d) and posterior_samples (N, L, d); got {theta.shape} and "
            f"{samples.shape}."
        )
    if normalize:
        low, high = theta.min(axis=0), theta.max(axis=0)
        width = np.where(high > low, high - low, 1.0)
        theta = (theta - low) / width
        samples = (samples - low) / width
    rng = np.random.default_rng(seed)
    if references is None:
        low, high = theta.min(axis=0), theta.max(axis=0)
        references = rng.uniform(low, high, size=theta.shape)
    else:
        references = np.asarray(references, np.float64)
        if references.shape != theta.shape:
            raise ValueError(f"references must have shape {theta.shape}; got {references.shape}.")
        if normalize:
            references = (references - low) / width
    d_true = np.linalg.norm(theta - references, axis=-1)  # (N,)
    d_samples = np.linalg.norm(samples - references[:, None, :], axis=-1)  # (N, L)
    f = _level(np.sum(d_samples < d_true[:, None], axis=1), samples.shape[1])
    return coverage_curve(f, kind="tarp", seed=seed, **kwargs)
