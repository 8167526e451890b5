"""Training objectives as pure ``init`` / ``step`` / ``evaluate`` functions."""

from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.objectives.nle import nle, nle_log_prob

__all__ = ["Objective", "TrainState", "nle", "nle_log_prob"]
