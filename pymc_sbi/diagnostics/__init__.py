"""Can the surrogate posterior be trusted? Two-sample tests and calibration checks.

- :func:`c2st`: classifier two-sample test (sbibm's recipe, or a fast one),
  on arrays or ArviZ ``DataTree`` groups;
- :func:`run_sbc`: simulation-based calibration with vectorised inference
  (:func:`posterior_draws`), :func:`uniformity` tests of the ranks;
- :func:`run_sbc_model`: SBC of a whole ``pm.Model`` (hierarchical, neural
  terms inside) against the real simulator;
- :func:`expected_coverage` (HPD regions) and :func:`tarp`;
- :func:`plot_sbc_ecdf`, :func:`plot_coverage`;
- :func:`diagnose`: all of them in one call, with a verdict table and figures.
- :func:`predictive_check`: surrogate versus real simulator at posterior draws;
- :func:`check_posterior_range`: did the posterior take a term outside its training range;
- :func:`disagreement_summary`: how much an ensemble's members disagree.
"""

from pymc_sbi.diagnostics.c2st import c2st, samples_matrix
from pymc_sbi.diagnostics.coverage import (
    CoverageCurve,
    coverage_curve,
    expected_coverage,
    hpd_levels,
    tarp,
)
from pymc_sbi.diagnostics.ensemble import disagreement_summary
from pymc_sbi.diagnostics.inference import posterior_draws
from pymc_sbi.diagnostics.plots import plot_coverage, plot_sbc_ecdf, save_figure
from pymc_sbi.diagnostics.predictive import PredictiveCheck, predictive_check
from pymc_sbi.diagnostics.range import check_posterior_range
from pymc_sbi.diagnostics.report import DiagnosticReport, diagnose, format_verdicts
from pymc_sbi.diagnostics.sbc import (
    SBCResult,
    run_sbc,
    sbc_from_samples,
    sbc_ranks,
    sbc_to_datatree,
    uniformity,
)
from pymc_sbi.diagnostics.sbc_model import data_logdensity_fn, run_sbc_model

__all__ = [
    "CoverageCurve",
    "DiagnosticReport",
    "PredictiveCheck",
    "SBCResult",
    "c2st",
    "check_posterior_range",
    "coverage_curve",
    "data_logdensity_fn",
    "diagnose",
    "disagreement_summary",
    "expected_coverage",
    "format_verdicts",
    "hpd_levels",
    "plot_coverage",
    "plot_sbc_ecdf",
    "posterior_draws",
    "predictive_check",
    "run_sbc",
    "run_sbc_model",
    "samples_matrix",
    "save_figure",
    "sbc_from_samples",
    "sbc_ranks",
    "sbc_to_datatree",
    "tarp",
    "uniformity",
]
