"""Training cost of a vmapped ensemble versus one network.

``python -m pymc_sbi.benchmarks ensemble`` trains, with :class:`pymc_sbi.Runner`,
one member and ``E`` members (``jax.vmap``) of the same objective for the same
number of gradient steps on the same simulations, and prints the wall time of
each and the ratio. Compilation is excluded (one warm-up run first; the timed
runs reuse the compiled program) and each time is the minimum over repeats,
so the numbers measure the training itself on a shared machine.

Default configuration: two-moons NLE with sbi's default NSF (5 transforms,
50 hidden units), 10,000 simulations, batch 200, 500 steps (10 epochs of 50
mini-batches, what ``ps.fit`` does in 10 epochs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import jax
import numpy as np

__all__ = ["format_table", "run_ensemble_benchmark", "time_training"]


def _objective(network: str):
    import pymc_sbi as ps

    nets = {"nsf": ps.nn.nsf, "maf": ps.nn.maf, "mdn": ps.nn.mdn}
    return ps.nle(nets[network]())


def time_training(
    members: Sequence[int] = (1, 5),
    *,
    task: str = "two_moons",
    network: str = "nsf",
    simulations: int = 10_000,
    batch_size: int = 200,
    num_steps: int = 500,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Seconds per run of ``num_steps`` steps for each ensemble size (min over ``repeats``).

    Returns one dict per entry of ``members`` with ``members``, ``seconds``,
    ``ms_per_step``, ``compile_seconds`` (first run minus the best) and
    ``ratio`` (to the first entry).
    """
    import pymc_sbi as ps
    from pymc_sbi.benchmarks.tasks import get_task

    t = get_task(task)
    sims = ps.simulate(t.prior_model(), t.simulator, simulations, seed=seed, progress=False)
    data = sims.as_batch()
    objective = _objective(network)
    rows = []
    for e in members:
        runner = ps.Runner(objective, batch_size=batch_size, members=None if e == 1 else int(e))
        key = jax.random.key(seed)
        state = runner.init(key, data)
        t0 = time.perf_counter()
        jax.block_until_ready(runner.run(key, data, num_steps, init_state=state).state)
        first = time.perf_counter() - t0
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            out = runner.run(jax.random.key(r + 1), data, num_steps, init_state=state)
            jax.block_until_ready(out.state)
            times.append(time.perf_counter() - t0)
        best = float(np.min(times))
        rows.append(
            {
                "members": int(e),
                "seconds": best,
                "ms_per_step": 1e3 * best / num_steps,
                "compile_seconds": first - best,
            }
        )
    for row in rows:
        row["ratio"] = row["seconds"] / rows[0]["seconds"]
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`time_training` rows."""
    lines = [
        "| members | train s (min) | ms / step | compile s | ratio to 1 member |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']} | {r['seconds']:.2f} | {r['ms_per_step']:.2f} | "
            f"{r['compile_seconds']:.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def run_ensemble_benchmark(
    members: Sequence[int] = (1, 5),
    *,
    network: str = "nsf",
    simulations: int = 10_000,
    batch_size: int = 200,
    num_steps: int = 500,
    repeats: int = 3,
) -> str:
    """Run :func:`time_training` and return a Markdown report."""
    rows = time_training(
        members,
        network=network,
        simulations=simulations,
        batch_size=batch_size,
        num_steps=num_steps,
        repeats=repeats,
    )
    head = (
        f"two_moons NLE ({network}), {simulations} simulations, batch {batch_size}, "
        f"{num_steps} steps per member, min over {repeats} repeats, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{len(os.sched_getaffinity(0))} CPU cores available"
    )
    return head + "\n\n" + format_table(rows)
