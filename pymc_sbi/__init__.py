"""pymc_sbi: simulation-based inference inside PyMC.

Simulate from a PyMC prior, train a neural surrogate with JAX/Flax/Optax, and
use it as a term of an ordinary ``pm.Model``::

    import pymc_sbi as ps

    sims = ps.simulate(prior, simulator, num_simulations=10_000, seed=0)
    likelihood = ps.fit(ps.nle(ps.nn.nsf()), sims, seed=1)
    with pm.Model():
        mu = pm.Normal("mu", 0, 1)
        ps.NeuralLikelihood("x", likelihood, params={"mu": mu}, observed=x_obs)
        idata = pm.sample(nuts_sampler="numpyro")

The top level holds the one-shot functions and the records users hold; the
primitives live in the subpackages, one per stage of the flow
(``docs/architecture.md``): :mod:`~pymc_sbi.nn`, :mod:`~pymc_sbi.objectives`,
:mod:`~pymc_sbi.train`, :mod:`~pymc_sbi.estimator`, :mod:`~pymc_sbi.terms`,
:mod:`~pymc_sbi.samplers`, :mod:`~pymc_sbi.vi`, :mod:`~pymc_sbi.direct`,
:mod:`~pymc_sbi.sequential`, :mod:`~pymc_sbi.diagnostics`.
"""

from pymc_sbi import (
    diagnostics,
    direct,
    estimator,
    nn,
    objectives,
    samplers,
    sequential,
    terms,
    train,
    vi,
)
from pymc_sbi.diagnostics import check_posterior_range, predictive_check
from pymc_sbi.direct import map_estimate, sample_posterior
from pymc_sbi.estimator import Estimator, load, save
from pymc_sbi.objectives import bnre, mnle, nle, npe, nre_a, nre_b, nre_c
from pymc_sbi.prior import param_spec
from pymc_sbi.samplers import sample
from pymc_sbi.sequential import SequentialResult, SNPEResult, run_sequential, run_snpe
from pymc_sbi.simulation import Simulations, simulate
from pymc_sbi.spec import ParamSpec
from pymc_sbi.terms import NeuralLikelihood, NeuralPosterior, NeuralRatio, posterior_matrix
from pymc_sbi.train import TrainConfig, cosine_recipe, fit, fit_ensemble, ratio_recipe
from pymc_sbi.vi import VIPosterior, fit_vi

__version__ = "0.1.0"

__all__ = [
    "Estimator",
    "NeuralLikelihood",
    "NeuralPosterior",
    "NeuralRatio",
    "ParamSpec",
    "SNPEResult",
    "SequentialResult",
    "Simulations",
    "TrainConfig",
    "VIPosterior",
    "bnre",
    "check_posterior_range",
    "cosine_recipe",
    "diagnostics",
    "direct",
    "estimator",
    "fit",
    "fit_ensemble",
    "fit_vi",
    "load",
    "map_estimate",
    "mnle",
    "nle",
    "nn",
    "npe",
    "nre_a",
    "nre_b",
    "nre_c",
    "objectives",
    "param_spec",
    "posterior_matrix",
    "predictive_check",
    "ratio_recipe",
    "run_sequential",
    "run_snpe",
    "sample",
    "sample_posterior",
    "samplers",
    "save",
    "sequential",
    "simulate",
    "terms",
    "train",
    "vi",
]
