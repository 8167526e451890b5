r"""Sequential neural likelihood and ratio estimation (SNLE, SNRE), hierarchies included.

Round 0 simulates from the prior and trains a likelihood (NLE) or ratio (NRE)
estimator.  Round :math:`r \ge 1` builds the *inference model* -- a
``pm.Model`` with the round-:math:`(r-1)` estimator as a term and the observed
data -- samples its posterior (the many-chain :func:`pymc_sbi.sample` by
default, or ``pm.sample`` / any sampler), draws the next parameters from it
(or from the prior truncated to its highest-density region), simulates,
appends them with their round id, and retrains on all rounds.

Why no proposal correction is needed
------------------------------------
**NLE** fits :math:`q(x \mid \theta)` by maximum likelihood on pairs
:math:`\theta_i \sim \tilde p(\theta)`, :math:`x_i \sim p(x \mid \theta_i)`.
The expected loss :math:`-\mathbb E_{\tilde p(\theta)}\mathbb E_{p(x\mid\theta)}
\log q(x \mid \theta)` is minimised by :math:`q(x \mid \theta) = p(x \mid \theta)`
for every :math:`\theta` in the support of :math:`\tilde p`: the likelihood is
learned *conditionally on* :math:`\theta`, whatever distribution the
:math:`\theta_i` come from.  The proposal only decides where the estimate is
accurate.

**NRE** trains a classifier between joint pairs :math:`(\theta_i, x_i)` and
pairs with shuffled partners.  With :math:`\theta \sim \tilde p` the classes
are :math:`\tilde p(\theta)p(x\mid\theta)` and :math:`\tilde p(\theta)\tilde p(x)`,
:math:`\tilde p(x) = \int p(x \mid \theta)\tilde p(\theta)\,d\theta`, so the
optimal log-ratio is

.. math::

    \log r(x, \theta) = \log \frac{\tilde p(\theta)\,p(x \mid \theta)}
                                  {\tilde p(\theta)\,\tilde p(x)}
                      = \log p(x \mid \theta) - \log \tilde p(x),

which for the fixed :math:`x_o` differs from the log-likelihood by a constant
in :math:`\theta`.  Hence :math:`p(\theta)\, r(x_o, \theta) \propto
p(\theta \mid x_o)` with the *original* prior, and the ``NeuralRatio`` term in
the prior model stays valid (on the support of :math:`\tilde p`); NRE-B/-C
only add a further function of :math:`x`.  (Durkan, Murray, Papamakarios,
"On contrastive learning for likelihood-free inference", ICML 2020; Hermans
et al., ICML 2020.)  Mixing rounds gives the mixture
:math:`\sum_r (n_r/N)\tilde p_r`, another proposal: the same argument holds.

Hierarchical models: the proposal is what the surrogate sees
-----------------------------------------------------------
A single-trial likelihood :math:`q(x \mid \theta, s)` inside a hierarchical
model sees per-trial parameters, e.g. ``v[subject_idx]``.  The next round must
simulate at those, so the proposal is the posterior of the *term's inputs*:
the driver finds the :func:`~pymc_sbi.NeuralLikelihood` /
:func:`~pymc_sbi.NeuralRatio` term in the model ``model_builder(estimator)``
builds, evaluates the term's parameter graph (:func:`~pymc_sbi.terms.draws.term_draws`) on
every posterior draw, and draws pairs (posterior draw, trial) uniformly -- so a
group with more trials gets proportionally more simulations -- with each
trial's covariates.  ``proposal_fn`` replaces this with any
``(posterior, model) -> theta`` (or ``(theta, covariates)``).

Truncation
----------
``truncation=eps`` draws later rounds from the prior restricted to the
:math:`1-\epsilon` highest-density region of the current posterior
(:mod:`pymc_sbi.sequential.truncation`; here the unnormalised density prior times
surrogate likelihood, so only with the default inference model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pymc as pm
from xarray import DataTree

from pymc_sbi.estimator import Estimator
from pymc_sbi.objectives import nle, nre_a, nre_b, nre_c
from pymc_sbi.objectives.base import Objective, TrainState
from pymc_sbi.prior import param_spec, prior_log_prob_fn
from pymc_sbi.samplers import pymc_sample, sample
from pymc_sbi.seed import as_seed_int
from pymc_sbi.sequential.proposals import (
    default_inference_model,
    draw_pairs,
)
from pymc_sbi.sequential.rounds import (
    SequentialData,
    append_simulations,
    record_round,
    round_sizes,
    train_round,
)
from pymc_sbi.sequential.truncation import hpr_threshold, sample_truncated_prior
from pymc_sbi.simulation import Simulations, run_simulator, simulate
from pymc_sbi.terms.draws import posterior_matrix, term_draws
from pymc_sbi.train.config import TrainConfig

__all__ = [
    "SequentialResult",
    "default_inference_model",
    "run_sequential",
]

KERNELS = ("nuts", "hmc", "mala", "rmh", "slice")
_METHODS = {"nle": nle, "nre_a": nre_a, "nre_b": nre_b, "nre_c": nre_c}


class SequentialResult(NamedTuple):
    """Output of :func:`run_sequential`.

    Attributes
    ----------
    estimator
        The last round's estimator.
    estimators
        One estimator per round; ``estimators[r].history`` has the round's
        training history plus ``round``, ``n_simulations``, ``n_total``,
        ``proposal`` (``"prior"``, ``"posterior"`` or ``"truncated"``),
        ``acceptance_rate`` (truncation only) and ``round_seconds``.
    simulations
        All simulations; ``simulations.proposal`` is the round of each.
    posteriors
        ``posteriors[r]``: the posterior DataTree of the inference model built
        with ``estimators[r]`` (the proposal of round ``r + 1``); the last is
        ``None`` unless ``sample_final``.
    """

    estimator: Estimator
    estimators: list[Estimator]
    simulations: Simulations
    posteriors: list[DataTree | None]

    @property
    def posterior(self) -> DataTree | None:
        """The last round's posterior (``None`` if it was not sampled)."""
        return self.posteriors[-1]


# --------------------------------------------------------------------- sampler
def _sample_posterior(model, sampler, chains, draws, tune, seed, sampler_kwargs) -> DataTree:
    kwargs = dict(sampler_kwargs or {})
    if callable(sampler):
        return sampler(model, seed)
    if sampler in KERNELS:
        return sample(
            model,
            kernel=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=seed,
            progressbar=False,
            **kwargs,
        )
    if sampler == "pymc":  # without kwargs, the fork-safe fast path
        return pymc_sample(model, draws=draws, tune=tune, chains=chains, seed=seed, **kwargs)
    raise ValueError(
        f"sampler must be one of {KERNELS} (pymc_sbi.sample kernels), 'pymc' (pm.sample) or a "
        f"callable (model, seed) -> DataTree; got {sampler!r}."
    )


def _log_posterior_fn(prior, estimator: Estimator, x_obs, log_prior_fn):
    """``theta (B, d) -> log p(theta) + sum_n log q(x_n | theta)`` (unnormalised)."""
    x = jnp.asarray(x_obs)
    k = len(estimator.x_shape)
    x = x.reshape(-1, *estimator.x_shape) if x.ndim > k else x[None]
    term = estimator.log_ratio if estimator.kind == "nre" else estimator.log_prob

    @jax.jit
    def loglik(theta):  # (B, d) -> (B,)
        return jnp.sum(term(x[None], theta[:, None, :]), axis=-1)

    def log_post(theta):
        lp = log_prior_fn(theta)
        return lp + np.asarray(loglik(jnp.asarray(theta)), np.float64)

    return log_post


# ---------------------------------------------------------------------- driver


def _objective(method, network) -> tuple[Objective, str]:
    if isinstance(method, Objective):
        if method.kind not in ("nle", "mnle", "nre"):
            raise ValueError(
                f"run_sequential trains likelihood or ratio objectives, got kind "
                f"{method.kind!r}; use run_snpe for posterior estimation."
            )
        return method, f"custom_{method.kind}"
    if method not in _METHODS:
        raise ValueError(
            f"method must be one of {sorted(_METHODS)} or an Objective, got {method!r}."
        )
    if method == "nle":
        return nle(network), method
    return _METHODS[method](network), method


def run_sequential(
    prior: pm.Model,
    simulator: Callable,
    x_obs=None,
    rounds: int = 3,
    simulations_per_round: int | Sequence[int] = 1000,
    seed: int = 0,
    method: Literal["nle", "nre_a", "nre_b", "nre_c"] | Objective = "nle",
    network=None,
    *,
    model_builder: Callable[[Estimator], pm.Model] | None = None,
    term_name: str | None = None,
    proposal_fn: Callable | None = None,
    covariates=None,
    sampler: str | Callable = "nuts",
    chains: int = 40,
    draws: int | None = None,
    tune: int = 500,
    sampler_kwargs: dict | None = None,
    truncation: float | None = None,
    resume_training: bool = False,
    retrain_from_scratch: bool = False,
    discard_prior_samples: bool = False,
    sample_final: bool = True,
    backend: Literal["jax", "numpy"] = "jax",
    progressbar: bool = True,
    config: TrainConfig | None = None,
) -> SequentialResult:
    r"""Sequential NLE / NRE: ``rounds`` rounds of sample-posterior, simulate, retrain.

    Parameters
    ----------
    prior
        The *training* prior ``pm.Model``: its free variables are the
        parameters the simulator (and the estimator) take, e.g. one trial's
        ``(v, b, sigma)`` for a hierarchical model.
    simulator
        As for :func:`pymc_sbi.simulation` (``simulator(rng_key, theta[, s])``).
    x_obs
        The observation(s) for the default inference model (``(*x_shape)`` or
        i.i.d. trials ``(n, *x_shape)``); not needed with ``model_builder``.
    rounds
        Number of rounds (1 = plain NLE/NRE).
    simulations_per_round
        An int, or one int per round.
    seed
        Seeds everything; same seed, same result.
    method
        ``"nle"``, ``"nre_a"``, ``"nre_b"``, ``"nre_c"`` or an
        :class:`~pymc_sbi.objectives.Objective` of kind ``nle``/``mnle``/``nre``
        (then ``network`` is ignored).
    network
        NLE: the conditional density (default ``nn.maf()``); NRE: the classifier.
    model_builder
        ``estimator -> pm.Model``: the inference model with the estimator as
        its neural term (hierarchies, covariates, any priors).  Default:
        :func:`default_inference_model` (the prior plus the term observing
        ``x_obs``).
    term_name
        Which neural term defines the proposal, if the model has several.
    proposal_fn
        ``(posterior, model) -> theta (m, d)`` or ``(theta, covariates)``;
        replaces :func:`~pymc_sbi.terms.draws.term_draws`.  ``n`` rows are drawn from it.
    covariates
        Round 0's covariate design (as :func:`pymc_sbi.simulation`); later
        rounds take the covariates paired with the proposed trials.
    sampler
        A :func:`pymc_sbi.sample` kernel (``"nuts"``, default, ``"hmc"``,
        ``"mala"``, ``"rmh"``, ``"slice"``), ``"pymc"`` (``pm.sample``; default
        keyword arguments: numpyro NUTS, vectorised chains from prior draws),
        or ``sampler(model, seed) -> DataTree``.
    chains, draws, tune
        Sampler settings; ``draws`` per chain defaults to enough for
        ``max(next round's simulations, 1000)`` draws.
    sampler_kwargs
        Extra keyword arguments for the sampler.
    truncation
        ``None`` (default): propose from the posterior.  ``eps``: from the
        prior truncated to the posterior's ``1 - eps`` highest-density region
        (default inference model only).
    resume_training, retrain_from_scratch, discard_prior_samples
        As :func:`pymc_sbi.train_round` (default: continue from the previous
        round's parameters with a fresh optimizer).
    sample_final
        Also sample the last round's posterior (``result.posterior``).
    backend
        The simulator's kind (``"jax"`` or ``"numpy"``).
    progressbar
        One line per round.
    config
        The :class:`~pymc_sbi.TrainConfig` of every round's training
        (:func:`~pymc_sbi.sequential.rounds.train_round`).

    Returns
    -------
    SequentialResult
        ``(estimator, estimators, simulations, posteriors)``.
    """
    sizes = round_sizes(simulations_per_round, rounds)
    objective, method_name = _objective(method, network)
    if model_builder is None:
        if x_obs is None:
            raise ValueError("Pass x_obs (the observation), or a model_builder that observes it.")
        x_obs = np.asarray(x_obs)

        def model_builder(est, _x=x_obs):
            return default_inference_model(prior, est, _x)

    elif truncation is not None and x_obs is None:
        raise ValueError(
            "truncation needs the posterior density prior x surrogate(x_obs): pass x_obs and "
            "no model_builder (a hierarchical model's per-trial region is not defined)."
        )
    if truncation is not None and not 0.0 < float(truncation) < 1.0:
        raise ValueError(f"truncation must be a quantile in (0, 1), got {truncation}.")
    if int(chains) < 1:
        raise ValueError(f"chains must be a positive integer, got {chains}.")
    if isinstance(sampler, str) and sampler not in (*KERNELS, "pymc"):
        _sample_posterior(None, sampler, 1, 1, 1, 0, None)  # raises the message
    spec = param_spec(prior)
    log_prior_fn = prior_log_prob_fn(prior, spec)
    round_seeds = np.random.SeedSequence(as_seed_int(seed)).spawn(len(sizes) + 1)
    data: SequentialData | None = None
    state: TrainState | None = None
    estimators: list[Estimator] = []
    posteriors: list[DataTree | None] = []
    for r, n in enumerate(sizes):
        t0 = time.perf_counter()
        sim_seed, sample_seed, prop_seed, train_seed = (
            int(s) for s in round_seeds[r].generate_state(4, np.uint32)
        )
        acceptance, cov, kind = 1.0, None, "prior"
        if r == 0:
            sims = simulate(
                prior,
                simulator,
                n,
                seed=sim_seed,
                backend=backend,
                progressbar=False,
                covariates=covariates,
            )
            theta, x, n_invalid, cov = sims.theta, sims.x, sims.n_invalid, sims.covariates
        else:
            model, idata = _posterior_of(
                model_builder,
                estimators[-1],
                sampler,
                chains,
                draws,
                tune,
                sample_seed,
                sampler_kwargs,
                n,
            )
            posteriors.append(idata)
            if truncation is not None:
                kind = "truncated"
                theta, acceptance = _truncated_proposal(
                    prior,
                    estimators[-1],
                    x_obs,
                    log_prior_fn,
                    idata,
                    spec,
                    truncation,
                    n,
                    prop_seed,
                )
            else:
                kind = "posterior"
                theta, cov = _posterior_proposal(
                    model, idata, term_name, proposal_fn, n, np.random.default_rng(prop_seed)
                )
            x = run_simulator(simulator, theta, seed=sim_seed, backend=backend, covariates=cov)
            n_invalid = 0
        data = append_simulations(
            data,
            theta,
            x,
            r,
            None,
            log_prior=log_prior_fn(theta),
            spec=spec,
            n_invalid=n_invalid,
            covariates=cov,
            proposal_density_known=False,
        )
        estimator, state = train_round(
            objective,
            data,
            config,
            seed=train_seed,
            state=state,
            resume_training=resume_training,
            retrain_from_scratch=retrain_from_scratch,
            discard_prior_samples=discard_prior_samples,
        )
        note = f" ({kind}" + (f", acceptance {acceptance:.3f})" if kind == "truncated" else ")")
        estimator = record_round(
            estimator,
            data,
            r,
            t0,
            history={"proposal": kind, "acceptance_rate": acceptance},
            config={"method": method_name, "truncation": truncation},
            progressbar=progressbar,
            note=note,
        )
        estimators.append(estimator)
    final = None
    if sample_final:
        _, final = _posterior_of(
            model_builder,
            estimators[-1],
            sampler,
            chains,
            draws,
            tune,
            int(round_seeds[-1].generate_state(1, np.uint32)[0]),
            sampler_kwargs,
            1000,
        )
    posteriors.append(final)
    assert data is not None
    return SequentialResult(estimators[-1], estimators, data.simulations, posteriors)


def _posterior_of(builder, estimator, sampler, chains, draws, tune, seed, kwargs, n_next):
    model = builder(estimator)
    if not isinstance(model, pm.Model):
        raise TypeError(f"model_builder must return a pm.Model, got {type(model).__name__}.")
    per_chain = draws if draws is not None else -(-max(n_next, 1000) // int(chains))
    return model, _sample_posterior(model, sampler, int(chains), per_chain, tune, seed, kwargs)


def _posterior_proposal(model, idata, term_name, proposal_fn, n, rng):
    if proposal_fn is not None:
        out = proposal_fn(idata, model)
        theta, cov = out if isinstance(out, tuple) else (out, None)
        theta = np.asarray(theta, np.float64)
        if theta.ndim != 2:
            raise ValueError(f"proposal_fn must return theta of shape (m, d), got {theta.shape}.")
        pick = rng.choice(theta.shape[0], n, replace=theta.shape[0] < n)
        return theta[pick], None if cov is None else np.asarray(cov, np.float64)[pick]
    theta_draws, cov, batch = term_draws(model, idata, term_name)
    return draw_pairs(theta_draws, cov, batch, n, rng)


def _truncated_proposal(prior, estimator, x_obs, log_prior_fn, idata, spec, eps, n, seed):
    log_post = _log_posterior_fn(prior, estimator, x_obs, log_prior_fn)
    samples = posterior_matrix(idata, spec)
    threshold = hpr_threshold(log_post(samples), eps)
    draws = sample_truncated_prior(prior, log_post, threshold, n, seed)
    return draws.theta, float(draws.acceptance_rate)
