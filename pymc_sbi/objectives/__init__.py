"""Training objectives as pure ``init`` / ``step`` / ``evaluate`` functions."""

from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.objectives.covariates import DataRange, with_covariates
from pymc_sbi.objectives.mnle import mnle, mnle_log_prob, mnle_sample
from pymc_sbi.objectives.nle import nle, nle_log_prob
from pymc_sbi.objectives.npe import npe, npe_log_prob
from pymc_sbi.objectives.nre import bnre, contrast_indices, nre_a, nre_b, nre_c, nre_log_ratio

__all__ = [
    "Objective",
    "TrainState",
    "bnre",
    "contrast_indices",
    "nle",
    "nle_log_prob",
    "npe",
    "npe_log_prob",
    "nre_a",
    "nre_b",
    "nre_c",
    "nre_log_ratio",
]

from pymc_sbi.objectives.snpe import snpe_b, snpe_c

__all__ += ["snpe_b", "snpe_c"]
__all__ += ["DataRange", "mnle", "mnle_log_prob", "mnle_sample", "with_covariates"]
