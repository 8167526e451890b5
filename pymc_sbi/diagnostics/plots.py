r"""Figures of the calibration checks (matplotlib; arviz-plots for the SBC ECDFs).

- :func:`plot_sbc_ecdf`: the difference between the ECDF of the SBC ranks
  (as PIT values) and the uniform CDF, per parameter, with a simultaneous
  confidence band from arviz-stats (Säilynoja et al. 2022; valid because the
  SBC ranks of different datasets are independent), or arviz-plots'
  ``plot_ecdf_pit`` with arviz-stats' ``pot_c`` test.
- :func:`plot_coverage`: expected-coverage / TARP curves against the diagonal,
  with their simultaneous band under calibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pymc_sbi.diagnostics.coverage import CoverageCurve
from pymc_sbi.diagnostics.sbc import SBCResult, sbc_to_datatree

__all__ = ["plot_coverage", "plot_sbc_ecdf", "save_figure"]


def plot_sbc_ecdf(
    result: SBCResult,
    *,
    method: str = "envelope",
    envelope_prob: float = 0.95,
    var_names=None,
    n_simulations: int = 1000,
    axes=None,
    **kwargs: Any,
):
    r"""ECDF-difference plot of SBC ranks with a simultaneous band.

    Plots :math:`\hat F(u) - u` of the PIT values ``(r + 0.5) / (L + 1)`` per
    parameter.

    Parameters
    ----------
    result
        Output of :func:`~pymc_sbi.diagnostics.run_sbc` or
        :func:`~pymc_sbi.diagnostics.sbc_from_samples`.
    method
        ``"envelope"``: the ECDF and its simultaneous ``envelope_prob`` band
        from arviz-stats (``arviz_stats.ecdf_utils.ecdf_pit``, the simulation
        method of Säilynoja et al. 2022), drawn with matplotlib, one panel per
        column of ``theta``. arviz-plots' own ``envelope`` path fails in
        arviz-plots 1.3.2 (it passes a DataArray to ``np.linspace``), so the
        band is drawn here. ``"pot_c"``, ``"prit_c"`` or ``"piet_c"``:
        ``arviz_plots.plot_ecdf_pit`` with that uniformity test (p-value and
        highlighted suspicious points), one panel per variable.
    envelope_prob
        Probability of the band (or the tests' threshold).
    var_names
        ``pot_c``-style methods only: variables to plot.
    n_simulations
        Simulations for the band's simultaneous level.
    axes
        ``"envelope"`` only: a sequence of ``d`` matplotlib axes.
    kwargs
        ``pot_c``-style methods: passed to ``arviz_plots.plot_ecdf_pit``.

    Returns
    -------
    numpy array of matplotlib Axes (``"envelope"``) or arviz_plots.PlotCollection
        Save either with :func:`save_figure`.
    """
    if method != "envelope":
        from arviz_plots import plot_ecdf_pit

        kwargs.setdefault("backend", "matplotlib")
        return plot_ecdf_pit(
            sbc_to_datatree(result),
            group="prior_sbc",
            var_names=var_names,
            method=method,
            envelope_prob=envelope_prob,
            sample_dims=["chain", "draw"],
            **kwargs,
        )
    import matplotlib.pyplot as plt
    from arviz_stats.ecdf_utils import ecdf_pit

    pit = result.pit
    d = pit.shape[1]
    if axes is None:
        cols = min(d, 4)
        rows = -(-d // cols)
        _, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    axes = np.ravel(np.asarray(axes, dtype=object))
    if axes.size < d:
        raise ValueError(f"Need {d} axes, one per parameter; got {axes.size}.")
    for j in range(d):
        rng = np.random.default_rng(214)  # arviz-stats' default seed: same band as arviz
        u, ecdf, lower, upper = ecdf_pit(pit[:, j], envelope_prob, n_simulations, rng=rng)
        ax = axes[j]
        ax.fill_between(u, lower - u, upper - u, step="post", color="C0", alpha=0.2, lw=0)
        ax.step(u, ecdf - u, where="post", color="C0", lw=1.5)
        ax.axhline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_title(result.labels[j], fontsize="medium")
        ax.set_xlabel("PIT of SBC rank")
        ax.set_xlim(0, 1)
    axes[0].set_ylabel(r"ECDF $-$ uniform")
    for ax in axes[d:]:
        ax.set_visible(False)
    return axes[:d]


def plot_coverage(*curves: CoverageCurve, labels=None, ax=None, title: str | None = None):
    """Empirical coverage against credibility level, with the diagonal and the band.

    Parameters
    ----------
    curves
        One or more :class:`~pymc_sbi.diagnostics.CoverageCurve` (e.g. HPD
        expected coverage and TARP of the same SBC run, or of two estimators).
    labels
        Legend labels (default: each curve's ``kind``).
    ax
        Matplotlib axes (default: a new 4 x 4 inch figure).
    title
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("plot_coverage needs at least one CoverageCurve.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    labels = list(labels or [c.kind.upper() for c in curves])
    if len(labels) != len(curves):
        raise ValueError(f"Got {len(labels)} labels for {len(curves)} curves.")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1, ls="--", label="calibrated")
    for i, (curve, label) in enumerate(zip(curves, labels, strict=True)):
        color = f"C{i}"
        ax.fill_between(curve.levels, curve.lower, curve.upper, color=color, alpha=0.15, lw=0)
        ax.plot(curve.levels, curve.coverage, color=color, lw=1.8, label=label)
    n = curves[0].f.size
    ax.set_xlabel("credibility level")
    ax.set_ylabel("empirical coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(title or f"coverage, N = {n} ({int(100 * curves[0].band_prob)}% band)")
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    return ax


def save_figure(obj: Any, path, *, dpi: int = 80) -> None:
    """Save a PlotCollection, matplotlib ``Axes`` or ``Figure`` to ``path`` (PNG by suffix).

    The default ``dpi=80`` keeps PNGs small (tens of kB).
    """
    import matplotlib.pyplot as plt

    if isinstance(obj, np.ndarray):  # axes from plot_sbc_ecdf
        obj = obj.ravel()[0]
    if hasattr(obj, "get_viz"):
        fig = obj.get_viz("figure")
        fig = fig.item() if hasattr(fig, "item") else fig
    elif hasattr(obj, "figure") and not hasattr(obj, "savefig"):
        fig = obj.figure
    else:
        fig = obj
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
