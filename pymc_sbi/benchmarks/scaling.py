"""Scaling of a hierarchical neural likelihood: logp+gradient cost and NUTS wall time.

``python -m pymc_sbi.benchmarks scaling`` times, for the log-normal race MNLE
(architecture of ``examples/ddm_hierarchical.py``; the cost does not depend on
the trained weights, so the network is fitted for one epoch only):

* one jitted log-density + gradient evaluation of the hierarchical model (the
  function numpyro's NUTS calls) for 1 group x {10, 100, 1,000, 10,000} trials
  and {1, 10, 100} groups x 100 trials (median over repeats);
* with ``--nuts``, ``pm.sample(nuts_sampler="numpyro")``, 4 chains x 1,000 draws
  (1,000 tuning steps, vectorized chains) for 100 groups x 100 trials.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import pymc as pm

__all__ = ["logp_grad_seconds", "nuts_seconds", "run_scaling", "scaling_estimator"]


def scaling_estimator(seed: int = 0):
    """The example's MNLE architecture, fitted for one epoch on 5,000 race simulations."""
    import pymc_sbi as ps
    from pymc_sbi.benchmarks import race

    sims = ps.simulate(
        race.prior_model(),
        race.simulator,
        5000,
        seed=seed,
        covariates=race.stimulus_design,
        progress=False,
    )
    net = ps.nn.mixed_density(ps.nn.mdn(num_components=5, hidden_features=64), hidden_features=64)
    return ps.fit(ps.mnle(net), sims, seed=seed, max_epochs=1, progress=False)


def _model(estimator, n_groups: int, n_trials: int, seed: int = 0, deduplicate: bool = True):
    import pymc_sbi as ps
    from pymc_sbi.benchmarks import race

    data = race.hierarchical_data(n_groups, n_trials, seed=seed)
    with pm.Model(coords={"subject": np.arange(n_groups)}) as model:
        mu_v = pm.Normal("mu_v", 1.0, 0.5)
        sd_v = pm.HalfNormal("sd_v", 0.3)
        mu_b = pm.Normal("mu_b", -0.5, 0.5)
        sd_b = pm.HalfNormal("sd_b", 0.3)
        sigma = pm.Uniform("sigma", 0.3, 1.2)
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
    estimator, n_groups=100, n_trials=100, draws=1000, chains=4, seed=0, deduplicate=True
) -> dict:
    """Wall time of numpyro NUTS (compilation included) and the divergence count."""
    model = _model(estimator, n_groups, n_trials, deduplicate=deduplicate)
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
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "mean_tree_size": float(idata.sample_stats["n_steps"].mean())
        if "n_steps" in idata.sample_stats
        else float("nan"),
    }


def run_scaling(nuts: bool = False, repeats: int = 50) -> str:
    """Run the benchmark and return a Markdown report.

    Each size is timed twice: with the term's default one network pass per
    distinct (subject, stimulus level) context (:mod:`pymc_sbi.dedup`) and with
    ``deduplicate=False`` (one network pass per trial).
    """
    est = scaling_estimator()
    lines = [
        "| groups | trials/group | total trials | logp+grad (ms), per distinct context "
        "| logp+grad (ms), per trial |",
        "|---|---|---|---|---|",
    ]
    cost = {}
    for g, t in [(1, 10), (1, 100), (1, 1000), (1, 10000), (10, 100), (100, 100)]:
        for dedup in (True, False):
            cost[(g, t, dedup)] = logp_grad_seconds(est, g, t, repeats, deduplicate=dedup)
        lines.append(
            f"| {g} | {t} | {g * t} | {1e3 * cost[(g, t, True)]:.3f} "
            f"| {1e3 * cost[(g, t, False)]:.3f} |"
        )
    lines.append("")
    for dedup, label in [(True, "per distinct context"), (False, "per trial")]:
        ratio = cost[(1, 1000, dedup)] / cost[(1, 10, dedup)]
        lines.append(f"1,000 trials / 10 trials cost ratio, {label}: {ratio:.2f} (target <= 3)")
    if nuts:
        res = nuts_seconds(est)
        lines.append(
            f"NUTS numpyro, 100 groups x 100 trials, 4 chains x 1,000 draws (+1,000 tune): "
            f"{res['wall_s']:.0f} s wall ({res['cpu_s']:.0f} CPU s; target < 120 s), "
            f"{res['divergences']} divergences, "
            f"mean steps per draw {res['mean_tree_size']:.1f}"
        )
    return "\n".join(lines)
