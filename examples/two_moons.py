"""Two moons, end to end: PyMC prior -> simulations -> NLE -> NUTS -> C2ST -> plot.

sbibm's two_moons task (Lueckmann et al. 2021): a 2-D parameter with a uniform
prior on [-1, 1]^2 and a simulator whose posterior, for observation 1, is two
thin crescents. We

1. simulate 10,000 (theta, x) pairs from the PyMC prior,
2. train a neural spline flow as the likelihood q(x | theta) (NLE),
3. put it into a pm.Model as a ``NeuralLikelihood`` term and sample it with
   numpyro NUTS: 40 vectorised chains, each started at its own prior draw, so
   both crescents are found and weighted by how many chains land in each
   (four chains started together would all fall into one crescent),
4. print the ArviZ summary and the C2ST against sbibm's reference posterior
   (0.5 = indistinguishable), and
5. write a pair plot of surrogate versus reference posterior.

Run: ``make demo`` (or ``python examples/two_moons.py [--out DIR]``); a few
minutes on a laptop CPU.
"""

import argparse
import time
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pymc as pm

import pymc_sbi as ps
from pymc_sbi.benchmarks import two_moons
from pymc_sbi.benchmarks.runner import posterior_matrix
from pymc_sbi.diagnostics import c2st


def main(out: Path, simulations: int = 10_000, seed: int = 0) -> float:
    t0 = time.perf_counter()
    # 1. the prior is an ordinary PyMC model; theta = (theta[0], theta[1])
    with pm.Model() as prior:
        pm.Uniform("theta", -1, 1, shape=2)
    sims = ps.simulate(prior, two_moons.simulator, num_simulations=simulations, seed=seed)
    print(
        f"simulated {len(sims)} pairs ({sims.n_invalid} invalid) "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    # 2. train the neural likelihood
    t = time.perf_counter()
    likelihood = ps.fit(ps.nle(ps.nn.nsf()), sims, seed=seed + 1)
    print(
        f"trained {likelihood} for {likelihood.history['epochs']} epochs "
        f"in {time.perf_counter() - t:.1f} s"
    )
    likelihood.save(out / "two_moons_nle.safetensors")

    # 3. the surrogate is a term of a pm.Model; sample it with vectorised NUTS
    x_obs = two_moons.observation(1)
    with pm.Model() as model:
        theta = pm.Uniform("theta", -1, 1, shape=2)
        ps.NeuralLikelihood("x", likelihood, params={"theta": theta}, observed=x_obs)
        t = time.perf_counter()
        idata = pm.sample(
            draws=250,
            tune=300,
            chains=40,
            random_seed=seed + 2,
            nuts_sampler="numpyro",
            nuts={"chain_method": "vectorized"},
            initvals=ps.prior.prior_initvals(model, 40, seed=seed + 3),
            compute_convergence_checks=False,
        )
    print(f"sampled 40 x 250 draws in {time.perf_counter() - t:.1f} s")

    # 4. summary and C2ST against the reference posterior (sbibm's recipe)
    print(az.summary(idata, var_names=["theta"]))
    samples = posterior_matrix(idata, likelihood.spec)
    reference = two_moons.reference_samples(1)
    score = c2st(samples, reference, seed=1)
    print(f"C2ST vs reference posterior (0.5 is perfect): {score:.3f}")

    # 5. pair plot: surrogate posterior over the reference
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    for ax, (label, s, color) in zip(
        axes,
        [("reference (sbibm)", reference, "0.3"), ("pymc_sbi NLE + NUTS", samples, "C0")],
        strict=True,
    ):
        ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.3, color=color)
        ax.set(title=label, xlabel="theta[0]", xlim=(-1, 1), ylim=(-1, 1), aspect="equal")
    axes[0].set_ylabel("theta[1]")
    fig.suptitle(f"two_moons observation 1 - C2ST {score:.3f}")
    fig.tight_layout()
    path = out / "two_moons_posterior.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}; total {time.perf_counter() - t0:.0f} s")
    return score


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    main(args.out, args.simulations, args.seed)
