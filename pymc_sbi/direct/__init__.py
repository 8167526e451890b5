"""A trained posterior (NPE) used directly, without MCMC.

Draws truncated to the prior support, leakage-corrected densities, MAP.
"""

from pymc_sbi.direct.map import map_estimate
from pymc_sbi.direct.sampling import (
    PosteriorDraws,
    log_prob_corrected,
    posterior_samples,
    sample_posterior,
    support_mass,
    to_datatree,
)

__all__ = [
    "PosteriorDraws",
    "log_prob_corrected",
    "map_estimate",
    "posterior_samples",
    "sample_posterior",
    "support_mass",
    "to_datatree",
]
