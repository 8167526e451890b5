"""Regenerate the figures and numbers of docs/diagnostics.md (about 3 minutes on 2 cores).

Run from the repository root: ``python docs/figures/make_diagnostics_figures.py``.
"""

import json
import time

import matplotlib

matplotlib.use("Agg")

import pymc_sbi as ps
from pymc_sbi.benchmarks import linear_gaussian as task
from pymc_sbi.diagnostics import (
    c2st,
    diagnose,
    expected_coverage,
    plot_coverage,
    plot_sbc_ecdf,
    posterior_draws,
    run_sbc,
    save_figure,
    tarp,
    uniformity,
)

out = {}
sims = ps.simulate(task.prior_model(), task.simulator, 5000, seed=0, progressbar=False)
config = ps.TrainConfig(batch_size=100, learning_rate=1e-3, max_epochs=300, patience=20)
npe = ps.fit(
    ps.npe(ps.nn.maf(hidden_features=32, num_transforms=3)), sims, config, seed=1, progressbar=False
)
nle = ps.fit(
    ps.nle(ps.nn.maf(hidden_features=32, num_transforms=3)), sims, config, seed=1, progressbar=False
)

for name, est in (("npe", npe), ("nle", nle)):
    t = time.perf_counter()
    res = run_sbc(est, task.prior_model(), task.simulator, num_datasets=200,
                  num_posterior_samples=200, seed=2)  # fmt: skip
    sbc_s = time.perf_counter() - t
    cov = expected_coverage(res)
    tp = tarp(res.theta_true, res.posterior_samples)
    save_figure(plot_sbc_ecdf(res), f"docs/figures/diagnostics_sbc_{name}.png")
    save_figure(
        plot_coverage(cov, tp, labels=["HPD", "TARP"], title=f"{name.upper()}: coverage"),
        f"docs/figures/diagnostics_coverage_{name}.png",
    )
    x_obs = task.observation(1)
    samples, _, _ = posterior_draws(est, task.prior_model(), x_obs[None], 10_000, seed=3)
    out[name] = {
        "sbc_s": round(sbc_s, 1),
        "p_values": {k: v.round(3).tolist() for k, v in uniformity(res).items()},
        "hpd_max_error": round(cov.max_error, 3),
        "tarp_max_error": round(tp.max_error, 3),
        "c2st_obs1": round(c2st(task.reference_samples(1), samples[0]), 3),
    }

# A deliberately over-confident "posterior": NPE draws shrunk to half their spread.
res = run_sbc(npe, task.prior_model(), task.simulator, num_datasets=200,
              num_posterior_samples=200, seed=2)  # fmt: skip
mean = res.posterior_samples.mean(1, keepdims=True)
shrunk = ps.diagnostics.sbc_from_samples(
    res.theta_true, mean + 0.5 * (res.posterior_samples - mean), spec=res.spec
)
save_figure(plot_sbc_ecdf(shrunk), "docs/figures/diagnostics_sbc_overconfident.png")
out["overconfident"] = {k: v.round(6).tolist() for k, v in uniformity(shrunk).items()}
out["overconfident_tarp_max_error"] = round(
    tarp(shrunk.theta_true, shrunk.posterior_samples).max_error, 3
)

report = diagnose(npe, task.prior_model(), task.simulator, num_datasets=200,
                  num_posterior_samples=200, references=[(task.observation(1),
                  task.reference_samples(1))], progressbar=False, seed=4)  # fmt: skip
out["report"] = str(report)
print(json.dumps(out, indent=1))
