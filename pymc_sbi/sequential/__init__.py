"""Sequential rounds: simulate where the current posterior puts its mass, then retrain."""

from pymc_sbi.sequential.likelihood import SequentialResult, run_sequential
from pymc_sbi.sequential.rounds import SequentialData, append_simulations, train_round
from pymc_sbi.sequential.snpe import SNPEResult, run_snpe
from pymc_sbi.sequential.truncation import hpr_threshold, sample_truncated_prior

__all__ = [
    "SNPEResult",
    "SequentialData",
    "SequentialResult",
    "append_simulations",
    "hpr_threshold",
    "run_sequential",
    "run_snpe",
    "sample_truncated_prior",
    "train_round",
]
