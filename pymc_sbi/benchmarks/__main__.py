"""Command line: ``python -m pymc_sbi.benchmarks run --task two_moons --method nle ...``.

Prints a table (or, with ``--json``, one JSON object per run and sampler).
"""

from __future__ import annotations

import argparse
import json
import sys

COLUMNS = [
    ("task", "{}"),
    ("method", "{}"),
    ("network", "{}"),
    ("simulations", "{}"),
    ("seed", "{}"),
    ("observation", "{}"),
    ("sampler", "{}"),
    ("chains", "{}"),
    ("c2st", "{:.3f}"),
    ("simulate_s", "{:.1f}"),
    ("train_s", "{:.1f}"),
    ("train_cpu_s", "{:.1f}"),
    ("epochs", "{}"),
    ("sample_s", "{:.1f}"),
    ("sample_cpu_s", "{:.1f}"),
    ("draws", "{}"),
    ("ess_per_s", "{:.0f}"),
    ("peak_rss_mb", "{:.0f}"),
]


def format_table(rows: list[dict]) -> str:
    """Render rows as a Markdown table."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(f.format(r[c]) for c, f in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def main(argv: list[str] | None = None) -> int:
    """Run the ``python -m pymc_sbi.benchmarks`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m pymc_sbi.benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate, train, sample and score one configuration")
    run.add_argument("--task", default="two_moons")
    run.add_argument(
        "--method",
        default="nle",
        choices=["nle", "npe", "snpe", "snle", "snre", "nre_a", "nre_b", "nre_c", "bnre"],
    )
    run.add_argument("--rounds", type=int, default=3, help="rounds for --method snpe/snle/snre")
    run.add_argument(
        "--truncation",
        type=float,
        default=None,
        help="snle/snre: later rounds from the prior truncated to the posterior's 1 - EPS "
        "highest-density region (e.g. 1e-4); default: from the posterior",
    )
    run.add_argument("--network", default="nsf", choices=["nsf", "maf", "mdn"])
    run.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="E",
        help="nle/npe/nre_*: train an E-member ensemble with ps.fit_ensemble (default 1: ps.fit)",
    )
    run.add_argument("--simulations", type=int, default=10_000)
    run.add_argument("--seed", type=int, nargs="+", default=[0])
    run.add_argument("--observation", type=int, default=1)
    run.add_argument(
        "--sampler",
        default="numpyro",
        help="comma-separated samplers, each NAME, NAME:CHAINS or NAME:CHAINSxDRAWS, NAME from "
        "numpyro, nutpie, pymc (pm.sample NUTS backends), blackjax-nuts, hmc, mala, rmh, "
        "slice, imh (ps.sample kernels), or any registered one (default numpyro)",
    )
    run.add_argument("--chains", type=int, default=None, help="chains (default per sampler)")
    run.add_argument(
        "--draws", type=int, default=None, help="draws per chain (default: samples / chains)"
    )
    run.add_argument("--posterior-samples", type=int, default=10_000)
    run.add_argument(
        "--c2st-samples",
        type=int,
        default=None,
        help="subsample each set for C2ST (default: all, as sbibm)",
    )
    run.add_argument(
        "--fit-defaults",
        action="store_true",
        help="train npe and the NRE methods with ps.fit's defaults instead of their "
        "cosine-decay recipes (NPE_FIT / NRE_FIT in pymc_sbi.benchmarks.runner)",
    )
    run.add_argument("--json", action="store_true", help="one JSON object per line")
    run.add_argument("--progress", action="store_true")
    from pymc_sbi.benchmarks.sbc import add_sbc_parser, main_sbc

    add_sbc_parser(sub)
    scaling = sub.add_parser("scaling", help="hierarchical MNLE: logp+grad cost vs trials/groups")
    scaling.add_argument("--nuts", action="store_true", help="also time NUTS on 100 x 100")
    scaling.add_argument("--repeats", type=int, default=50)
    scaling.add_argument(
        "--shared-trunk",
        action="store_true",
        help="time NUTS with mixed_density(shared_trunk=True) (the cost table shows both)",
    )
    ens = sub.add_parser("ensemble", help="training time of an E-member ensemble vs one member")
    ens.add_argument("--members", type=int, nargs="+", default=[1, 5])
    ens.add_argument("--network", default="nsf", choices=["nsf", "maf", "mdn"])
    ens.add_argument("--hidden-features", type=int, default=None)
    ens.add_argument("--num-transforms", type=int, default=None)
    ens.add_argument("--simulations", type=int, default=10_000)
    ens.add_argument("--batch-size", type=int, default=200)
    ens.add_argument("--steps", type=int, default=500)
    ens.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "sbc":
        return main_sbc(args)
    if args.command == "scaling":
        from pymc_sbi.benchmarks.scaling import run_scaling

        print(run_scaling(nuts=args.nuts, repeats=args.repeats, shared_trunk=args.shared_trunk))
        return 0
    if args.command == "ensemble":
        from pymc_sbi.benchmarks.ensemble import run_ensemble_benchmark

        print(
            run_ensemble_benchmark(
                args.members,
                network=args.network,
                hidden_features=args.hidden_features,
                num_transforms=args.num_transforms,
                simulations=args.simulations,
                batch_size=args.batch_size,
                num_steps=args.steps,
                repeats=args.repeats,
            )
        )
        return 0

    from pymc_sbi.benchmarks.runner import parse_sampler, run_benchmark

    samplers = tuple(s.strip() for s in args.sampler.split(",") if s.strip())
    for s in samplers:
        try:
            parse_sampler(s)
        except ValueError as err:
            parser.error(str(err))
    rows = []
    for seed in args.seed:
        results, _, _ = run_benchmark(
            args.task,
            args.method,
            args.simulations,
            seed,
            args.observation,
            samplers,
            network=args.network,
            n_posterior=args.posterior_samples,
            c2st_samples=args.c2st_samples,
            progressbar=args.progress,
            rounds=args.rounds,
            truncation=args.truncation,
            chains=args.chains,
            draws=args.draws,
            ensemble=args.ensemble,
            fit_defaults=args.fit_defaults,
        )
        for r in results:
            row = r.as_dict()
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
