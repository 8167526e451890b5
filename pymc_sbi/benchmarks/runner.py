"""Run one benchmark: simulate, train, sample with each NUTS backend, score.

Used by ``python -m pymc_sbi.benchmarks run`` and by ``examples/two_moons.py``.
Every timing is wall-clock seconds; CPU seconds (user + system of this
process, all threads) are reported beside it, because a 2-core machine is
shared and wall time alone hides how much work was done.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SAMPLERS",
    "BenchmarkResult",
    "parse_sampler",
    "posterior_matrix",
    "register_sampler",
    "run_benchmark",
    "sample_posterior",
]


@dataclass
class BenchmarkResult:
    """One row of the benchmark table (one sampler on one trained estimator)."""

    task: str
    method: str
    simulations: int
    seed: int
    observation: int
    sampler: str
    network: str
    c2st: float
    simulate_s: float
    train_s: float
    train_cpu_s: float
    epochs: int
    sample_s: float
    sample_cpu_s: float
    draws: int
    chains: int
    ess_bulk_min: float
    ess_within: float
    ess_per_s: float
    peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The row as a flat dict (``extra`` merged in), for JSON output."""
        d = dict(self.__dict__)
        d.update(d.pop("extra"))
        return d


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def within_chain_ess(idata, spec) -> float:
    """Smallest (over parameters) sum over chains of each chain's own bulk ESS.

    With many chains on a multimodal posterior, ArviZ's multi-chain ESS is tiny
    by construction (chains sit in different modes, so R-hat is large); the mode
    weights come from the spread of the chains instead. The sum of per-chain ESS
    measures how well each chain explores its own region -- what the sampler's
    speed buys.
    """
    import arviz as az

    worst = np.inf
    for name in spec.names:
        arr = np.asarray(idata.posterior[name].values)
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
        per_chain = np.array([az.ess(arr[c : c + 1], method="bulk") for c in range(arr.shape[0])])
        worst = min(worst, float(np.min(per_chain.sum(axis=0))))
    return worst


# Tasks with a 2-D uniform prior on [low, high]^2: there a ratio estimator's own
# posterior p(theta) r(x_o, theta) is sampled exactly by grid quadrature, so its C2ST
# measures the estimator without any sampler error.
GRID_BOXES: dict[str, tuple[float, float]] = {"two_moons": (-1.0, 1.0)}


def grid_posterior_samples(
    log_density, low: float, high: float, n_draws: int, seed: int, n: int = 1201
) -> np.ndarray:
    """``n_draws`` exact draws from ``exp(log_density(theta))`` on the square ``[low, high]^2``.

    ``log_density`` maps ``(m, 2)`` parameters to ``(m,)`` values (e.g.
    ``lambda t: estimator.log_ratio(x_obs, t)`` for a uniform prior).  It is
    evaluated on an ``n x n`` grid (1201: spacing 0.0017 on two_moons' prior,
    a sixth of the crescent's width); grid points are drawn in proportion to
    ``exp(log_density)`` and jittered uniformly within their cell.
    """
    axis = np.linspace(low, high, n)
    h = axis[1] - axis[0]
    theta = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    theta = theta.astype(np.float32)
    chunk = 200_000
    logp = np.concatenate(
        [
            np.asarray(log_density(theta[i : i + chunk]), np.float64)
            for i in range(0, len(theta), chunk)
        ]
    )
    w = np.exp(logp - logp.max())
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(theta), n_draws, p=w / w.sum())
    draws = theta[idx] + rng.uniform(-h / 2, h / 2, (n_draws, 2))
    return np.clip(draws, low, high)


def posterior_matrix(idata, spec) -> np.ndarray:
    """Posterior draws of the spec's parameters as an ``(n_samples, d)`` matrix."""
    post = idata.posterior
    values = {}
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        arr = np.asarray(post[name].values)  # (chain, draw, *shape)
        values[name] = arr.reshape(-1, *shape)
    return spec.flatten(values)


def _pymc_nuts(model, backend, chains, draws, seed, tune, progressbar):
    """PyMC's ``pm.sample`` with one NUTS backend (see :func:`sample_posterior`)."""
    from pymc_sbi.samplers import pymc_sample

    kwargs = {}  # numpyro: pymc_sample's fork-safe fast path
    if backend == "nutpie":
        kwargs = dict(
            nuts_sampler="nutpie",
            compile_kwargs={"mode": "JAX", "gradient_backend": "jax"},
        )
    elif backend != "numpyro":
        kwargs = dict(nuts_sampler="pymc", cores=1)
    return pymc_sample(
        model, draws=draws, tune=tune, chains=chains, seed=seed, progressbar=progressbar, **kwargs
    )


def _blackjax(kernel, init="prior"):
    """``ps.sample`` with a BlackJAX kernel, every chain at its own prior draw.

    With ``init="resample"`` the chains start at prior draws resampled by their likelihood.
    """

    def run(model, chains, draws, seed, tune, progressbar):
        import pymc_sbi as ps

        kwargs = {}
        if kernel == "imh":  # proposal: a Student-t fitted to a short MALA pilot
            import jax

            from pymc_sbi.terms.jaxmodel import jax_model, prior_positions

            jm = jax_model(model)
            pilot = ps.samplers.run_chains(
                jax.random.key(seed + 1),
                jm.logdensity_fn,
                prior_positions(model, chains, seed=seed + 1),
                kernel="mala",
                num_warmup=tune,
                num_samples=20,
            )
            kwargs["proposal"] = ps.samplers.fit_gaussian(pilot.positions, inflate=1.2, df=5)
        return ps.sample(
            model,
            kernel=kernel,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=seed,
            init=init,
            progressbar=progressbar,
            **kwargs,
        )

    return run


def _vi(family: str, divergence: str = "rkl"):
    """``ps.fit_vi`` (defaults) then ``chains * draws`` i.i.d. draws; the time includes the fit."""

    def run(model, chains, draws, seed, tune, progressbar):
        from pymc_sbi.vi import VIConfig, fit_vi

        post = fit_vi(
            model,
            VIConfig(family=family, divergence=divergence),
            seed=seed,
            progressbar=progressbar,
        )
        return post.sample(chains * draws, seed=seed + 1)

    return run


# name -> (run(model, chains, draws, seed, tune, progressbar) -> DataTree, default chains)
SAMPLERS: dict[str, tuple] = {
    "numpyro": (lambda m, *a: _pymc_nuts(m, "numpyro", *a), 40),
    "nutpie": (lambda m, *a: _pymc_nuts(m, "nutpie", *a), 4),
    "pymc": (lambda m, *a: _pymc_nuts(m, "pymc", *a), 4),
    "blackjax-nuts": (_blackjax("nuts"), 40),
    "hmc": (_blackjax("hmc"), 40),
    "mala": (_blackjax("mala"), 40),
    "mala-resample": (_blackjax("mala", init="resample"), 40),
    "nuts-resample": (_blackjax("nuts", init="resample"), 40),
    "rmh": (_blackjax("rmh"), 40),
    "slice": (_blackjax("slice"), 40),
    "imh": (_blackjax("imh"), 40),
    "vi-maf": (_vi("maf"), 1),
}


def register_sampler(name: str, run, default_chains: int = 40) -> None:
    """Add a benchmark sampler ``run(model, chains, draws, seed, tune, progressbar)``.

    ``run`` returns a DataTree.
    """
    SAMPLERS[name] = (run, default_chains)


def parse_sampler(spec: str) -> tuple[str, int | None, int | None]:
    """Parse a sampler spec: ``"mala"``, ``"numpyro:40"``, ``"numpyro:40x250"``.

    ``"mala"`` -> ``("mala", None, None)``; ``"numpyro:40"`` -> 40 chains;
    ``"numpyro:40x250"`` -> 40 chains of 250 draws.
    """
    name, _, shape = spec.partition(":")
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose from {sorted(SAMPLERS)}.")
    chains, _, draws = shape.partition("x")
    try:
        return name, (int(chains) if chains else None), (int(draws) if draws else None)
    except ValueError:
        msg = f"Bad sampler spec {spec!r}; use NAME, NAME:CHAINS or NAME:CHAINSxDRAWS."
        raise ValueError(msg) from None


def sample_posterior(
    model,
    sampler: str,
    n_samples: int,
    seed: int,
    chains: int | None = None,
    tune: int = 300,
    progressbar: bool = False,
    draws: int | None = None,
):
    """Draw about ``n_samples`` posterior samples (``chains`` x ``draws``) with one sampler.

    ``sampler`` is a key of :data:`SAMPLERS`; ``"name:C"`` runs ``C`` chains and
    ``"name:CxD"`` ``C`` chains of ``D`` draws (over ``chains``/``draws``, which
    override the sampler's defaults):

    * ``numpyro``: ``chains`` (default 40) vectorised chains, each started at its
      own prior draw, so that multimodal posteriors get the mode weights of the
      chains' spread rather than of one starting region.
    * ``nutpie``: JAX backend with JAX gradients (the fast nutpie path), 4 chains.
    * ``pymc``: PyMC's NUTS, 4 chains on one core (``cores=1``: no fork).
    * ``blackjax-nuts``, ``hmc``, ``mala``, ``rmh``, ``slice``, ``imh``:
      :func:`pymc_sbi.sample` with that kernel, chains (default 40) vmapped and
      started at prior draws; ``imh`` proposes from a Student-t fitted to a
      20-draw MALA pilot.
    * ``mala-resample``, ``nuts-resample``: the same kernels from prior draws
      resampled by their likelihood (``init="resample"``: chains start inside
      the posterior's modes, in proportion to their mass).

    Returns ``(idata, chains, draws)``.
    """
    name, spec_chains, spec_draws = parse_sampler(sampler)
    run, default_chains = SAMPLERS[name]
    chains = spec_chains or chains or default_chains
    draws = spec_draws or draws or -(-n_samples // chains)
    return run(model, chains, draws, seed, tune, progressbar), chains, draws


METHODS = ("nle", "npe", "snpe", "snle", "snre", "nre_a", "nre_b", "nre_c", "bnre")
# ratio_recipe per NRE method (two_moons 10^4, grid C2ST over training seeds 1-3 in
# docs/benchmarks.md): NRE-A's epochs are ~20x cheaper than NRE-C's and it needs more of
# them; BNRE's balancing penalty fails at a high learning rate (grid C2ST 0.91-0.97 at 3e-2)
NRE_FIT = {
    "nre_a": {"epochs": 200, "learning_rate": 2e-2},
    "nre_b": {},
    "nre_c": {},
    "bnre": {"epochs": 100, "learning_rate": 5e-3},
}
# NPE: cosine_recipe (two_moons 10^4 NSF over seeds 0-2: C2ST 0.503 / 0.540 / 0.530 in
# 60 epochs against fit's defaults' 0.582 / 0.544 / 0.536 in 94-108 epochs)
NPE_FIT = {"epochs": 60, "learning_rate": 2e-3}


def make_objective(method: str, network: str):
    """The objective for a benchmark method; ``network`` names the density for nle/npe."""
    import pymc_sbi as ps

    densities = {"nsf": ps.nn.nsf, "maf": ps.nn.maf, "mdn": ps.nn.mdn}
    if method in ("nle", "npe", "snpe", "snle"):
        if network not in densities:
            raise ValueError(f"--network must be one of {sorted(densities)} for {method}.")
        if method in ("snpe", "snle"):
            return None  # run_snpe / run_sequential build their objective from the network
        return getattr(ps, method)(densities[network]())
    ratio = {"nre_a": ps.nre_a, "nre_b": ps.nre_b, "nre_c": ps.nre_c, "bnre": ps.bnre}
    if method == "snre":
        return None  # run_sequential(method="nre_c"): the default classifier
    if method in ratio:
        return ratio[method]()  # default classifier: MLP, 2 x 50, ReLU
    raise ValueError(f"Unknown method {method!r}; available: {METHODS}.")


def _term(estimator, model, x_obs):
    import pymc_sbi as ps

    params = {n: model[n] for n in estimator.spec.names}
    with model:
        if estimator.kind == "nle":
            ps.NeuralLikelihood("x", estimator, params=params, observed=x_obs)
        else:
            ps.NeuralRatio("x", estimator, params=params, observed=x_obs)


def run_benchmark(
    task_name: str = "two_moons",
    method: str = "nle",
    simulations: int = 10_000,
    seed: int = 0,
    observation: int = 1,
    samplers: tuple[str, ...] = ("numpyro",),
    network: str = "nsf",
    n_posterior: int = 10_000,
    c2st_samples: int | None = None,
    progressbar: bool = False,
    rounds: int = 3,
    chains: int | None = None,
    draws: int | None = None,
    truncation: float | None = None,
    ensemble: int = 1,
    fit_defaults: bool = False,
) -> tuple[list[BenchmarkResult], Any, dict[str, Any]]:
    """Simulate, train and sample; return one :class:`BenchmarkResult` per sampler.

    ``nle`` and the NRE methods put the estimator in the task's prior model and
    sample it with each NUTS backend in ``samplers``; ``npe`` samples its
    posterior directly (rejecting draws outside the prior support; sampler
    ``"direct"``; ``chains``/``draws`` override each sampler's defaults, and
    C2ST scores a random subset of ``n_posterior`` draws when there are more);
    ``snpe`` runs ``rounds`` rounds of SNPE-C with
    ``simulations // rounds`` simulations each (its ``train_s`` includes the
    later rounds' simulation and proposal sampling, ``simulate_s`` is round 0's
    share only). ``snle`` / ``snre`` (NRE-C) run ``rounds`` rounds of
    :func:`pymc_sbi.run_sequential` (``method="nle"`` / ``"nre_c"``; proposals: 40-chain
    ``ps.sample`` NUTS posteriors, or with ``truncation`` the prior truncated
    to their HPD region), then sample the last round's estimator like ``nle``;
    ``train_s`` covers all rounds. NRE-A/B/C and BNRE train with
    :func:`pymc_sbi.ratio_recipe` (Adam from a high
    learning rate, cosine decay over a fixed number of epochs; per-method
    settings in ``NRE_FIT``); on 2-D uniform-prior tasks (``GRID_BOXES``)
    their rows also carry ``grid_c2st``, the C2ST of the trained ratio's
    exact posterior (:func:`grid_posterior_samples`; not timed). ``npe``
    trains with :func:`pymc_sbi.cosine_recipe` (``NPE_FIT``);
    ``fit_defaults=True`` trains NPE and NRE with :func:`pymc_sbi.fit`'s
    defaults instead.
    ``ensemble=E > 1`` trains ``nle``/``npe``/NRE estimators with
    :func:`pymc_sbi.fit_ensemble` (``E`` vmapped members, the mixture used
    everywhere). Also returns the trained estimator and
    ``{sampler: draws}``.
    """
    import arviz as az

    import pymc_sbi as ps
    from pymc_sbi.benchmarks.tasks import get_task
    from pymc_sbi.diagnostics import c2st

    if ensemble > 1 and method in ("snpe", "snle", "snre"):
        raise ValueError(f"--ensemble is for nle, npe and the NRE methods, not {method}.")
    objective = make_objective(method, network)
    task = get_task(task_name)
    x_obs = task.observation(observation)
    extra: dict[str, Any] = {}
    if method == "snpe":
        densities = {"nsf": ps.nn.nsf, "maf": ps.nn.maf, "mdn": ps.nn.mdn}
        per_round = simulations // rounds
        t, c = time.perf_counter(), _cpu()
        result = ps.run_snpe(
            task.prior_model(),
            task.simulator,
            x_obs,
            rounds,
            per_round,
            seed=seed,
            network=densities[network](),
            progressbar=progressbar,
        )
        train_s, train_cpu = time.perf_counter() - t, _cpu() - c
        estimator, sims, simulate_s = result.estimator, result.simulations, 0.0
        extra["rounds"] = rounds
        extra["epochs_per_round"] = [int(e.history["epochs"]) for e in result.estimators]
    elif method in ("snle", "snre"):
        per_round = simulations // rounds
        t, c = time.perf_counter(), _cpu()
        seq_options = dict(
            seed=seed, progressbar=progressbar, sample_final=False, truncation=truncation
        )
        snle = method == "snle"
        result = ps.run_sequential(
            task.prior_model(),
            task.simulator,
            x_obs,
            rounds,
            per_round,
            method="nle" if snle else "nre_c",
            network=getattr(ps.nn, network)() if snle else None,
            **seq_options,
        )
        train_s, train_cpu = time.perf_counter() - t, _cpu() - c
        estimator, sims, simulate_s = result.estimator, result.simulations, 0.0
        extra["rounds"] = rounds
        extra["truncation"] = truncation
        extra["epochs_per_round"] = [int(e.history["epochs"]) for e in result.estimators]
    else:
        t = time.perf_counter()
        sims = ps.simulate(
            task.prior_model(), task.simulator, simulations, seed=seed, progressbar=progressbar
        )
        simulate_s = time.perf_counter() - t
        # ratio classifiers: high learning rate, cosine decay, fixed epochs (see
        # ratio_recipe), npe with cosine_recipe; nle keeps fit's defaults
        config = None
        if fit_defaults:
            extra["fit"] = "defaults"
        elif method in NRE_FIT:
            config = ps.ratio_recipe(**NRE_FIT[method])
        elif method == "npe":
            config = ps.cosine_recipe(**NPE_FIT)
        if config is not None:
            extra["fit"] = f"adam {config.learning_rate:g} cosine {config.max_epochs} ep"
        t, c = time.perf_counter(), _cpu()
        if ensemble > 1:
            estimator = ps.fit_ensemble(
                objective,
                sims,
                config,
                num_members=ensemble,
                seed=seed + 1,
                progressbar=progressbar,
            )
            extra["ensemble"] = ensemble
        else:
            estimator = ps.fit(objective, sims, config, seed=seed + 1, progressbar=progressbar)
        train_s, train_cpu = time.perf_counter() - t, _cpu() - c

    reference = task.reference_samples(observation)
    if method in NRE_FIT and task_name in GRID_BOXES:
        grid = grid_posterior_samples(
            lambda t: estimator.log_ratio(x_obs, t), *GRID_BOXES[task_name], n_posterior, seed
        )
        extra["grid_c2st"] = float(c2st(grid, reference, seed=seed, max_samples=c2st_samples))
    results, traces = [], {}
    direct = method in ("npe", "snpe")
    for i, sampler in enumerate(("direct",) if direct else samplers):
        t, c = time.perf_counter(), _cpu()
        extra["n_invalid"] = sims.n_invalid
        if direct:
            draws = ps.sample_posterior(estimator, x_obs, n_posterior, seed + 2)
            samples = np.asarray(draws.samples)
            n_chains, n_draws = 1, samples.shape[0]
            extra["acceptance_rate"] = float(draws.acceptance_rate)
            traces[sampler] = samples
        else:
            model = task.prior_model()
            _term(estimator, model, x_obs)
            idata, n_chains, n_draws = sample_posterior(
                model,
                sampler,
                n_posterior,
                seed=seed + 2 + i,
                chains=chains,
                draws=draws,
                progressbar=progressbar,
            )
            traces[sampler] = idata
            samples = posterior_matrix(idata, estimator.spec)
        sample_s, sample_cpu = time.perf_counter() - t, _cpu() - c
        if direct:
            ess_min = ess_within = float(samples.shape[0])  # independent draws
        else:
            ess = az.ess(idata, method="bulk")
            ess_min = float(min(np.min(ess[v].values) for v in estimator.spec.names))
            ess_within = within_chain_ess(idata, estimator.spec)
        extra["draws_per_chain"] = n_draws
        scored = samples
        if scored.shape[0] > n_posterior:  # e.g. 1,000 chains x 100 draws: score n_posterior
            pick = np.random.default_rng(seed).choice(scored.shape[0], n_posterior, replace=False)
            scored = scored[pick]
        score = c2st(scored, reference, seed=seed, max_samples=c2st_samples)
        results.append(
            BenchmarkResult(
                task=task_name,
                method=method,
                simulations=simulations,
                seed=seed,
                observation=observation,
                sampler=sampler,
                network=network if method in ("nle", "npe", "snpe", "snle") else "mlp_classifier",
                c2st=float(score),
                simulate_s=simulate_s,
                train_s=train_s,
                train_cpu_s=train_cpu,
                epochs=int(sum(extra.get("epochs_per_round", [estimator.history["epochs"]]))),
                sample_s=sample_s,
                sample_cpu_s=sample_cpu,
                draws=int(samples.shape[0]),
                chains=n_chains,
                ess_bulk_min=ess_min,
                ess_within=ess_within,
                ess_per_s=ess_within / sample_s,
                peak_rss_mb=_peak_rss_mb(),
                extra=dict(extra),
            )
        )
    return results, estimator, traces
