"""SBC benchmark: ``python -m pymc_sbi.benchmarks sbc --method npe|nle --datasets 200``.

Simulates and trains one estimator on a task (``linear_gaussian`` by default),
then times simulation-based calibration over ``--datasets`` datasets with
:func:`pymc_sbi.diagnostics.run_sbc` -- one batched pass for NPE, one
vectorised many-chain NUTS run on the product of all posteriors for NLE --
and reports the rank uniformity p-values and the HPD / TARP coverage errors.
Wall times include JAX compilation (one program per run).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_sbc_parser", "main_sbc", "run_sbc_benchmark"]

SBC_COLUMNS = [
    ("task", "{}"),
    ("method", "{}"),
    ("simulations", "{}"),
    ("datasets", "{}"),
    ("posterior_samples", "{}"),
    ("train_s", "{:.1f}"),
    ("sbc_s", "{:.1f}"),
    ("inference_s", "{:.1f}"),
    ("min_p_pot_c", "{:.3f}"),
    ("min_p_chi2", "{:.3f}"),
    ("hpd_max_error", "{:.3f}"),
    ("tarp_max_error", "{:.3f}"),
]


def run_sbc_benchmark(
    method: str = "npe",
    datasets: int = 200,
    *,
    task_name: str = "linear_gaussian",
    simulations: int = 5000,
    posterior_samples: int = 200,
    chains: int = 4,
    num_warmup: int = 300,
    seed: int = 0,
    max_epochs: int = 300,
    progressbar: bool = False,
) -> dict[str, Any]:
    """Train a small MAF ``method`` estimator and time an SBC run; one result row."""
    import pymc_sbi as ps
    from pymc_sbi.benchmarks.tasks import get_task
    from pymc_sbi.diagnostics import expected_coverage, run_sbc, tarp, uniformity

    if method not in ("npe", "nle"):
        raise ValueError(f"--method must be 'npe' or 'nle'; got {method!r}.")
    task = get_task(task_name)
    sims = ps.simulate(
        task.prior_model(), task.simulator, simulations, seed=seed, progressbar=False
    )
    objective = getattr(ps, method)(ps.nn.maf(hidden_features=32, num_transforms=3))
    t = time.perf_counter()
    config = ps.TrainConfig(batch_size=100, learning_rate=1e-3, max_epochs=max_epochs)
    estimator = ps.fit(objective, sims, config, seed=seed + 1, progressbar=progressbar)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    res = run_sbc(estimator, task.prior_model(), task.simulator, num_datasets=datasets,
                  num_posterior_samples=posterior_samples, seed=seed + 2, chains=chains,
                  num_warmup=num_warmup, progressbar=progressbar)  # fmt: skip
    sbc_s = time.perf_counter() - t
    p = uniformity(res)
    row = {
        "task": task_name,
        "method": method,
        "simulations": simulations,
        "datasets": datasets,
        "posterior_samples": int(res.num_posterior_samples),
        "train_s": train_s,
        "sbc_s": sbc_s,
        "simulate_s": float(res.info["simulate_s"]),
        "inference_s": float(res.info["inference_s"]),
        "min_p_pot_c": float(p["pot_c"].min()),
        "min_p_chi2": float(p["chi2"].min()),
        "hpd_max_error": expected_coverage(res).max_error,
        "tarp_max_error": tarp(res.theta_true, res.posterior_samples).max_error,
        "seed": seed,
    }
    row.update({k: v for k, v in res.info.items() if k.startswith(("mean_", "chains", "num_w"))})
    return row


def add_sbc_parser(sub) -> argparse.ArgumentParser:
    """Add the ``sbc`` subcommand to the benchmark CLI's subparsers."""
    p = sub.add_parser("sbc", help="train an estimator and time SBC over many datasets")
    p.add_argument("--method", default="npe", choices=["npe", "nle"])
    p.add_argument("--task", default="linear_gaussian")
    p.add_argument("--datasets", type=int, default=200)
    p.add_argument("--simulations", type=int, default=5000)
    p.add_argument("--posterior-samples", type=int, default=200)
    p.add_argument("--chains", type=int, default=4, help="NLE: chains of the product posterior")
    p.add_argument("--warmup", type=int, default=300, help="NLE: warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--json", action="store_true")
    p.add_argument("--progress", action="store_true")
    return p


def main_sbc(args: argparse.Namespace) -> int:
    """Run the ``sbc`` subcommand and print a Markdown row (or JSON)."""
    row = run_sbc_benchmark(
        args.method,
        args.datasets,
        task_name=args.task,
        simulations=args.simulations,
        posterior_samples=args.posterior_samples,
        chains=args.chains,
        num_warmup=args.warmup,
        seed=args.seed,
        max_epochs=args.max_epochs,
        progressbar=args.progress,
    )
    if args.json:
        print(json.dumps(row), flush=True)
    else:
        print("| " + " | ".join(c for c, _ in SBC_COLUMNS) + " |")
        print("|" + "---|" * len(SBC_COLUMNS))
        print("| " + " | ".join(f.format(row[c]) for c, f in SBC_COLUMNS) + " |")
    return 0
