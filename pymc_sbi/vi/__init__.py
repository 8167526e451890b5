r"""Variational inference on any ``pm.Model`` (or raw JAX log-density) in its unconstrained space.

See ``docs/vi.md``. Layers: :mod:`.families` (Gaussian, full-rank Gaussian,
MAF/NSF flows), :mod:`.divergences` (pure losses), :mod:`.core` (``init`` /
``step`` / ``evaluate`` and the chunked loop), :class:`VIConfig` (the options,
configured once), :func:`fit_vi` (one shot),
:class:`VIPosterior` (``sample`` → ``DataTree``, ``evaluate``, ``map``), and
:func:`train_amortized` (a conditional flow :math:`q(\theta \mid x)`).
"""

from pymc_sbi.vi.amortized import AmortizedVIPosterior, train_amortized
from pymc_sbi.vi.config import VIConfig, amortized_recipe
from pymc_sbi.vi.core import VIAlgorithm, VIState, make_vi_optimizer, run, vi_algorithm
from pymc_sbi.vi.divergences import (
    DIVERGENCES,
    alpha_divergence,
    forward_kl,
    importance_weighted,
    make_loss,
    reverse_kl,
)
from pymc_sbi.vi.families import FAMILIES, Family, condition_family, make_family
from pymc_sbi.vi.fit import fit_vi, warmup_moments
from pymc_sbi.vi.posterior import VIDiagnostics, VIPosterior

__all__ = [
    "DIVERGENCES",
    "FAMILIES",
    "AmortizedVIPosterior",
    "Family",
    "VIAlgorithm",
    "VIConfig",
    "VIDiagnostics",
    "VIPosterior",
    "VIState",
    "alpha_divergence",
    "amortized_recipe",
    "condition_family",
    "fit_vi",
    "forward_kl",
    "importance_weighted",
    "make_family",
    "make_loss",
    "make_vi_optimizer",
    "reverse_kl",
    "run",
    "train_amortized",
    "vi_algorithm",
    "warmup_moments",
]
