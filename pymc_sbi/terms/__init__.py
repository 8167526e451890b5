"""PyMC terms: a trained estimator as a term of a ``pm.Model`` (PyTensor Ops built on JAX)."""

from pymc_sbi.terms.core import SupportWarning, TermInfo, model_terms, term_info
from pymc_sbi.terms.draws import TermDraws, posterior_matrix, term_draws
from pymc_sbi.terms.likelihood import NeuralLikelihood
from pymc_sbi.terms.posterior import NeuralPosterior
from pymc_sbi.terms.range_check import OutOfRangeWarning, check_range
from pymc_sbi.terms.ratio import NeuralRatio

__all__ = [
    "NeuralLikelihood",
    "NeuralPosterior",
    "NeuralRatio",
    "OutOfRangeWarning",
    "SupportWarning",
    "TermDraws",
    "TermInfo",
    "check_range",
    "model_terms",
    "posterior_matrix",
    "term_draws",
    "term_info",
]
