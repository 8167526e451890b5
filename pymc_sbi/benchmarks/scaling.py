"""Scaling of a hierarchical neural likelihood: logp+gradient cost and NUTS wall time.

``python -m pymc_sbi.benchmarks scaling`` times, for the log-normal race MNLE
(architecture of ``examples/ddm_hierarchical.py``; the cost does not depend on
the trained weights, so the network is fitted for one epoch only):

* one jitted log-density + gradient evaluation of the hierarchical model (the
  function numpyro's NUTS calls) for 1 group x {10, 100, 1,000, 10,000} trials
  and {1, 10, 100} groups x 100 trials (median over repeats), with one network
  pass per distinct context, one per trial, and one per distinct context of
  the same MNLE with a shared trunk (``mixed_density(shared_trunk=True)``);
* with ``--nuts``, ``pm.sample(nuts_sampler="numpyro")``, 4 chains x 1,000 draws
  (1,000 tuning steps, vectorized chains) for 100 groups x 100 trials, with a
  surrogate *trained* on 5 x 10^4 simulations (NUTS's trajectory lengths depend
  on the learned surface, unlike the cost of one evaluation) with SiLU units
  (smooth: ReLU's kinked log-density halves the step size NUTS can take), and
  the subject parameters centred (100 trials per subject identify them well);
  ``shared_trunk=True`` times the shared-trunk MNLE instead.
"""

from __future__ import annotations

import time

import arviz as az
import jax
import numpy as np
import pymc as pm

__all__ = ["logp_grad_seconds", "nuts_seconds", "run_scaling", "scaling_estimator"]


def scaling_estimator(
    seed: int = 0,
    simulations: int = 5000,
    max_epochs: int = 1,
    activation: str = "relu",
    shared_trunk: bool = False,
):
    """The example's MNLE architecture on race simulations (default: one epoch on 5,000).

    The cost of one evaluation does not depend on the weights, so the cost table
    uses a one-epoch fit; the NUTS timing trains properly (``max_epochs`` > 1).
    ``shared_trunk=True``: one 64-wide trunk for the categorical and mixture heads.
    """
    import pymc_sbi as ps
    from pymc_sbi.benchmarks import race

    sims = ps.simulate(
        race.prior_model(),
        race.simulator,
        simulations,
        seed=seed,
        covariates=race.stimulus_design,
        progressbar=False,
    )
    net = ps.nn.mixed_density(
        ps.nn.mdn(num_components=5, hidden_features=64, activation=activation),
        hidden_features=64,
        activation=activation,
        shared_trunk=shared_trunk,
    )
    config = ps.TrainConfig(max_epochs=max_epochs)
    if max_epochs > 1:
        config = config.replace(batch_size=512, learning_rate=1e-3, patience=30)
    return ps.fit(ps.mnle(net), sims, config, seed=seed, progressbar=False)


def _model(
    estimator,
    n_groups: int,
    n_trials: int,
    seed: int = 0,
    deduplicate: bool = True,
    centred: bool = False,
):
    import pymc_sbi as ps
    from pymc_sbi.benchmarks import race

    data = race.hierarchical_data(n_groups, n_trials, seed=seed)
    with pm.Model(coords={"subject": np.arange(n_groups)}) as model:
        mu_v = pm.Normal("mu_v", 1.0, 0.5)
        sd_v = pm.HalfNormal("sd_v", 0.3)
        mu_b = pm.Normal("mu_b", -0.5, 0.5)
        sd_b = pm.HalfNormal("sd_b", 0.3)
        sigma = pm.Uniform("sigma", 0.3, 1.2)
        if centred:
            v = pm.Normal("v", mu_v, sd_v, dims="subject")
            b = pm.Normal("b", mu_b, sd_b, dims="subject")
        else:
            v = mu_v + sd_v * pm.Normal("z_v", 0, 1, dims="subject")
            b = mu_b + sd_b * pm.Normal("z_b", 0, 1, dims="subject")
        ps.NeuralLikelihood(
            "x",
            estimator,
            {"v": v, "b": b, "sigma": sigma},
            observed=data["x"].reshape(n_groups, n_trials, 2),
            covariates=data["s"].reshape(n_groups, n_trials),
            check_training_range=False,
            deduplicate=deduplicate,
        )
    return model


def logp_grad_seconds(
    estimator, n_groups: int, n_trials: int, repeats: int = 50, deduplicate: bool = True
) -> float:
    """Median seconds of one jitted logp + gradient of the model (as numpyro calls it)."""
    from pymc.sampling.jax import get_jaxified_logp

    model = _model(estimator, n_groups, n_trials, deduplicate=deduplicate)
    logp = get_jaxified_logp(model)
    fn = jax.jit(jax.value_and_grad(lambda xs: logp(xs)))
    point = model.initial_point()
    x = [np.asarray(point[v.name]) for v in model.value_vars]
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def nuts_seconds(
    estimator,
    n_groups=100,
    n_trials=100,
    draws=1000,
    chains=4,
    seed=0,
    deduplicate=True,
    centred=True,
) -> dict:
    """Wall time of numpyro NUTS (compilation included), divergences and tree sizes."""
    model = _model(estimator, n_groups, n_trials, deduplicate=deduplicate, centred=centred)
    t0, c0 = time.perf_counter(), time.process_time()
    with model:
        idata = pm.sample(
            draws=draws,
            tune=draws,
            chains=chains,
            nuts_sampler="numpyro",
            random_seed=seed,
            progressbar=False,
            nuts={"chain_method": "vectorized"},
        )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = idata.sample_stats
    rhat = az.rhat(idata)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "divergences": int(stats["diverging"].sum()),
        "mean_tree_size": float(stats["n_steps"].mean()),
        "step_size": float(stats["step_size"].mean()),
        "max_rhat": max(float(np.max(rhat[v].values)) for v in ("mu_v", "mu_b", "sigma")),
    }


def run_scaling(nuts: bool = False, repeats: int = 50, shared_trunk: bool = False) -> str:
    """Run the benchmark and return a Markdown report.

    Each size is timed three times in turn: with the term's default one network
    pass per distinct (subject, stimulus level) context (:mod:`pymc_sbi.terms.dedup`),
    with ``deduplicate=False`` (one network pass per trial), and per distinct
    context with the shared-trunk MNLE. ``shared_trunk`` picks the MNLE that
    ``nuts`` samples with.
    """
    est = scaling_estimator()
    shared = scaling_estimator(shared_trunk=True)
    lines = [
        "| groups | trials/group | total trials | logp+grad (ms), per distinct context "
        "| logp+grad (ms), per trial | logp+grad (ms), shared trunk, per distinct context |",
        "|---|---|---|---|---|---|",
    ]
    cost = {}
    variants = {"dedup": (est, True), "per_trial": (est, False), "shared": (shared, True)}
    for g, t in [(1, 10), (1, 100), (1, 1000), (1, 10000), (10, 100), (100, 100)]:
        for name, (e, dedup) in variants.items():
            cost[(g, t, name)] = logp_grad_seconds(e, g, t, repeats, deduplicate=dedup)
        lines.append(
            f"| {g} | {t} | {g * t} | "
            + " | ".join(f"{1e3 * cost[(g, t, name)]:.3f}" for name in variants)
            + " |"
        )
    lines.append("")
    labels = {
        "dedup": "per distinct context",
        "per_trial": "per trial",
        "shared": "shared trunk, per distinct context",
    }
    for name, label in labels.items():
        ratio = cost[(1, 1000, name)] / cost[(1, 10, name)]
        lines.append(f"1,000 trials / 10 trials cost ratio, {label}: {ratio:.2f} (target <= 3)")
    ratio = cost[(100, 100, "dedup")] / cost[(100, 100, "shared")]
    lines.append(f"100 x 100, separate networks / shared trunk: {ratio:.2f}")
    if nuts:
        trained = scaling_estimator(
            simulations=50_000, max_epochs=200, activation="silu", shared_trunk=shared_trunk
        )
        per_eval = logp_grad_seconds(trained, 100, 100, repeats)
        res = nuts_seconds(trained)
        lines.append(
            f"NUTS numpyro, 100 groups x 100 trials (centred), 4 chains x 1,000 draws "
            f"(+1,000 tune), SiLU MNLE{' (shared trunk)' if shared_trunk else ''} trained "
            f"on 5e4 simulations "
            f"({trained.history['epochs']} epochs): "
            f"{res['wall_s']:.0f} s wall ({res['cpu_s']:.0f} CPU s; target < 120 s), "
            f"{res['divergences']} divergences, mean steps per draw "
            f"{res['mean_tree_size']:.1f}, step size {res['step_size']:.3f}, "
            f"max R-hat (mu_v, mu_b, sigma) {res['max_rhat']:.3f}; "
            f"one logp+grad {1e3 * per_eval:.2f} ms"
        )
    return "\n".join(lines)
