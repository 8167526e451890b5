"""Training: one loop, configured once.

:func:`train_loop` is the loop under :func:`fit`, :func:`fit_ensemble` and
sequential rounds, configured by a :class:`TrainConfig`; the :class:`Runner`
(``init`` / ``update`` / ``run``) serves custom loops.
"""

from pymc_sbi.train.config import TrainConfig, cosine_recipe, ratio_recipe, steps_per_epoch
from pymc_sbi.train.loop import (
    DiscreteDataWarning,
    epoch_batches,
    fit,
    fit_ensemble,
    init_state,
    run_epoch,
    select_members,
    take,
    train_loop,
    train_validation_split,
)
from pymc_sbi.train.runner import Runner, RunResult

__all__ = [
    "DiscreteDataWarning",
    "RunResult",
    "Runner",
    "TrainConfig",
    "cosine_recipe",
    "epoch_batches",
    "fit",
    "fit_ensemble",
    "init_state",
    "ratio_recipe",
    "run_epoch",
    "select_members",
    "steps_per_epoch",
    "take",
    "train_loop",
    "train_validation_split",
]
