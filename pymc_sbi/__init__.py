"""pymc_sbi: simulation-based inference inside PyMC.

Simulate from a PyMC prior, train a neural surrogate with JAX/Flax/Optax, and
use it as a term of an ordinary ``pm.Model``::

    import pymc_sbi as ps

    sims = ps.simulate(prior, simulator, n=10_000, seed=0)
    likelihood = ps.fit(ps.nle(ps.nn.nsf()), sims, seed=1)
    with pm.Model():
        mu = pm.Normal("mu", 0, 1)
        ps.NeuralLikelihood("x", likelihood, params={"mu": mu}, observed=x_obs)
        idata = pm.sample(nuts_sampler="numpyro")
"""

from pymc_sbi import diagnostics, nn, samplers, vi
from pymc_sbi.ensemble import disagreement_summary, fit_ensemble
from pymc_sbi.estimator import Estimator
from pymc_sbi.io import load, save
from pymc_sbi.likelihood import NeuralLikelihood
from pymc_sbi.objectives import (
    DataRange,
    Objective,
    TrainState,
    bnre,
    mnle,
    nle,
    npe,
    nre_a,
    nre_b,
    nre_c,
    snpe_b,
    snpe_c,
    with_covariates,
)
from pymc_sbi.posterior import (
    PosteriorDraws,
    log_prob_corrected,
    posterior_samples,
    sample_posterior,
    support_mass,
    to_datatree,
)
from pymc_sbi.posterior_map import map_estimate
from pymc_sbi.posterior_term import NeuralPosterior
from pymc_sbi.predictive import PredictiveCheck, predictive_check
from pymc_sbi.prior import draw_prior, param_spec, prior_initvals
from pymc_sbi.range_check import OutOfRangeWarning, check_posterior_range, check_range
from pymc_sbi.ratio import NeuralRatio
from pymc_sbi.runner import Runner, RunResult, steps_per_epoch
from pymc_sbi.samplers import sample
from pymc_sbi.schedule import cosine_fit_options
from pymc_sbi.sequential import (
    SequentialData,
    SNPEResult,
    append_simulations,
    run_snpe,
    train_round,
)
from pymc_sbi.sequential_likelihood import SequentialResult, run_sequential, run_snle, run_snre
from pymc_sbi.simulate import Simulations, draw_covariates, run_simulator, simulate
from pymc_sbi.spec import ParamSpec
from pymc_sbi.training import (
    epoch_batches,
    fit,
    make_optimizer,
    run_epoch,
    take,
    train_validation_split,
)
from pymc_sbi.truncation import hpr_threshold, sample_truncated_prior
from pymc_sbi.vi import AmortizedVIPosterior, VIPosterior, fit_vi, train_amortized

__version__ = "0.1.0"

__all__ = [
    "AmortizedVIPosterior",
    "DataRange",
    "Estimator",
    "NeuralLikelihood",
    "NeuralPosterior",
    "NeuralRatio",
    "Objective",
    "OutOfRangeWarning",
    "ParamSpec",
    "PosteriorDraws",
    "PredictiveCheck",
    "RunResult",
    "Runner",
    "SNPEResult",
    "SequentialData",
    "SequentialResult",
    "Simulations",
    "TrainState",
    "VIPosterior",
    "append_simulations",
    "bnre",
    "check_posterior_range",
    "check_range",
    "cosine_fit_options",
    "diagnostics",
    "disagreement_summary",
    "draw_covariates",
    "draw_prior",
    "epoch_batches",
    "fit",
    "fit_ensemble",
    "fit_vi",
    "hpr_threshold",
    "load",
    "log_prob_corrected",
    "make_optimizer",
    "map_estimate",
    "mnle",
    "nle",
    "nn",
    "npe",
    "nre_a",
    "nre_b",
    "nre_c",
    "param_spec",
    "posterior_samples",
    "predictive_check",
    "prior_initvals",
    "run_epoch",
    "run_sequential",
    "run_simulator",
    "run_snle",
    "run_snpe",
    "run_snre",
    "sample",
    "sample_posterior",
    "sample_truncated_prior",
    "samplers",
    "save",
    "simulate",
    "snpe_b",
    "snpe_c",
    "steps_per_epoch",
    "support_mass",
    "take",
    "to_datatree",
    "train_amortized",
    "train_round",
    "train_validation_split",
    "vi",
    "with_covariates",
]
