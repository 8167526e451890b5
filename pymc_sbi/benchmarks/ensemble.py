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


def _objective(network: str, hidden_features: int | None, num_transforms: int | None):
    import pymc_sbi as ps

    nets = {"nsf": ps.nn.nsf, "maf": ps.nn.maf, "mdn": ps.nn.mdn}
    kwargs = {} if hidden_features is None else {"hidden_features": int(hidden_features)}
    if num_transforms is not None and network != "mdn":
        kwargs["num_transforms"] = int(num_transforms)
    return ps.nle(nets[network](**kwargs))


def time_training(
    members: Sequence[int] = (1, 5),
    *,
    task: str = "two_moons",
    network: str = "nsf",
    hidden_features: int | None = None,
    num_transforms: int | None = None,
    simulations: int = 10_000,
    batch_size: int = 200,
    num_steps: int = 500,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Seconds per run of ``num_steps`` steps for each ensemble size (min over ``repeats``).

    Returns one dict per entry of ``members`` with ``members``, ``seconds``,
    ``ms_per_step``, ``cpu_seconds`` (process CPU time of the same best run:
    on a shared machine the steadier measure of work), ``compile_seconds``
    (first run minus the best) and ``ratio`` (to the first entry).
    """
    import pymc_sbi as ps
    from pymc_sbi.benchmarks.tasks import get_task

    t = get_task(task)
    sims = ps.simulate(t.prior_model(), t.simulator, simulations, seed=seed, progressbar=False)
    data = sims.as_batch()
    objective = _objective(network, hidden_features, num_transforms)
    rows = []
    for e in members:
        runner = ps.train.Runner(
            objective, batch_size=batch_size, members=None if e == 1 else int(e)
        )
        key = jax.random.key(seed)
        state = runner.init(key, data)
        t0 = time.perf_counter()
        jax.block_until_ready(runner.run(key, data, num_steps, init_state=state).state)
        first = time.perf_counter() - t0
        times, cpu = [], []
        for r in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = runner.run(jax.random.key(r + 1), data, num_steps, init_state=state)
            jax.block_until_ready(out.state)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        best = float(np.min(times))
        rows.append(
            {
                "members": int(e),
                "seconds": best,
                "ms_per_step": 1e3 * best / num_steps,
                "cpu_seconds": float(cpu[int(np.argmin(times))]),
                "compile_seconds": first - best,
            }
        )
    for row in rows:
        row["ratio"] = row["seconds"] / rows[0]["seconds"]
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`time_training` rows."""
    lines = [
        "| members | train s (min) | CPU s | ms / step | compile s | ratio to 1 member |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['members']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"{r['ms_per_step']:.2f} | "
            f"{r['compile_seconds']:.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def run_ensemble_benchmark(
    members: Sequence[int] = (1, 5),
    *,
    network: str = "nsf",
    hidden_features: int | None = None,
    num_transforms: int | None = None,
    simulations: int = 10_000,
    batch_size: int = 200,
    num_steps: int = 500,
    repeats: int = 3,
) -> str:
    """Run :func:`time_training` and return a Markdown report."""
    rows = time_training(
        members,
        network=network,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        simulations=simulations,
        batch_size=batch_size,
        num_steps=num_steps,
        repeats=repeats,
    )
    size = "default size" if hidden_features is None else f"{hidden_features} hidden"
    if num_transforms is not None and network != "mdn":
        size += f", {num_transforms} transforms"
    head = (
        f"two_moons NLE ({network}, {size}), {simulations} simulations, batch {batch_size}, "
        f"{num_steps} steps per member, min over {repeats} repeats, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{len(os.sched_getaffinity(0))} CPU cores available"
    )
    return head + "\n\n" + format_table(rows)
