"""Many-chain BlackJAX samplers on any ``pm.Model`` or JAX log-density.

Two layers:

- :func:`sample` (also ``ps.sample``): a ``pm.Model`` in, an ArviZ ``DataTree``
  out, with the kernels ``"nuts"``, ``"hmc"``, ``"mala"``, ``"rmh"``,
  ``"slice"`` and ``"imh"``, chains vectorised with ``jax.vmap``;
- :func:`run_chains`: the same driver on your own ``logdensity_fn`` of a flat
  vector (see ``docs/custom_sampling.md``).

IMH proposals: :class:`GaussianProposal` / :func:`fit_gaussian` and
:func:`npe_proposal` (an NPE estimator mapped to the model's unconstrained
space, log-Jacobian included).
"""

from pymc_sbi.samplers.api import initial_positions, pymc_sample, resample_positions, sample
from pymc_sbi.samplers.driver import ChainResult, TunedParameters, run_chains
from pymc_sbi.samplers.kernels import KERNELS, KernelSpec, get_kernel, register_kernel
from pymc_sbi.samplers.proposals import GaussianProposal, NPEProposal, fit_gaussian, npe_proposal

__all__ = [
    "KERNELS",
    "ChainResult",
    "GaussianProposal",
    "KernelSpec",
    "NPEProposal",
    "TunedParameters",
    "fit_gaussian",
    "get_kernel",
    "initial_positions",
    "npe_proposal",
    "pymc_sample",
    "register_kernel",
    "resample_positions",
    "run_chains",
    "sample",
]
