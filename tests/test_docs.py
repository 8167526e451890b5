"""The code blocks of docs/custom_sampling.md run as written and give the right answer."""

import re
from pathlib import Path

import numpy as np
import pytest
from mcse import assert_mean_within_mcse, assert_sd_within_mcse

DOC = Path(__file__).resolve().parents[1] / "docs" / "custom_sampling.md"


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_own_logdensity_block(x64):
    """The banana: z0 ~ N(0, 1), z1 | z0 ~ N(z0^2, 1/4), so E[z1] = 1 and sd(z1) = sqrt(2.25)."""
    namespace: dict = {}
    exec(compile(code_blocks()[0], str(DOC), "exec"), namespace)
    z = np.asarray(namespace["result"].positions)  # (chains, draws, 2)
    assert z.shape == (500, 200, 2)
    # 100,000 NUTS draws of 500 chains, but after 300 warm-up steps they have not mixed:
    # ESS (mean) ~1,800 for z0 and ~1,200 for z1 (R-hat 1.19 / 1.13; 2 chains accept < 10 %),
    # so 4 MCSE is 0.10 / 0.18 on the means and 0.10 / 0.29 on the sds.
    assert_mean_within_mcse(z, [0.0, 1.0], chains=True)
    assert_sd_within_mcse(z, [1.0, 1.5], chains=True)
    # The former bounds are kept too: for z1 they are only ~2.3 MCSE (mean) and ~2.1 MCSE (sd)
    # wide, so they hold for this seed but not for every one (the docs' run is too short to
    # support them; fixing that means more warm-up in docs/custom_sampling.md)
    np.testing.assert_allclose(z.reshape(-1, 2).mean(0), [0.0, 1.0], atol=0.1)
    np.testing.assert_allclose(z.reshape(-1, 2).std(0), [1.0, 1.5], rtol=0.1)
    assert 0.7 < float(namespace["result"].sample_stats["acceptance_rate"].mean()) < 0.95


@pytest.mark.slow
def test_prior_swap_block(tmp_path, monkeypatch):
    """The swapped-prior model's draws match the grid posterior of the same surrogate
    under the new prior (C2ST against exact draws from the 400 x 400 grid)."""
    import jax.numpy as jnp
    from scipy import stats

    import pymc_sbi as ps
    from pymc_sbi.benchmarks.tasks import get_task
    from pymc_sbi.diagnostics import c2st

    task = get_task("two_moons")
    sims = ps.simulate(task.prior_model(), task.simulator, 5000, seed=0, progressbar=False)
    est = ps.fit(ps.nle(ps.nn.nsf()), sims, seed=1, progressbar=False)
    monkeypatch.chdir(tmp_path)
    est.save("two_moons_nle.safetensors")
    x_obs = task.observation(1)
    namespace = {"ps": ps, "pm": __import__("pymc"), "x_obs": x_obs}
    exec(compile(code_blocks()[1], str(DOC), "exec"), namespace)
    draws = namespace["idata"].posterior["theta"].values.reshape(-1, 2)

    edges = np.linspace(-1, 1, 401)
    mid = (edges[:-1] + edges[1:]) / 2
    grid = np.stack(np.meshgrid(mid, mid, indexing="ij"), -1).reshape(-1, 2)
    log_lik = np.asarray(est.log_prob(jnp.asarray(x_obs)[None], jnp.asarray(grid))).ravel()
    a, b = (-1 - 0.3) / 0.2, (1 - 0.3) / 0.2
    log_prior = stats.truncnorm.logpdf(grid, a, b, loc=0.3, scale=0.2).sum(1)
    logp = log_lik + log_prior
    p = np.exp(logp - logp.max())
    rng = np.random.default_rng(0)
    idx = rng.choice(len(grid), 10_000, p=p / p.sum())
    exact = grid[idx] + rng.uniform(-0.5, 0.5, (10_000, 2)) * (edges[1] - edges[0])
    pick = rng.choice(len(draws), 10_000, replace=False)
    assert c2st(draws[pick], exact, seed=0) < 0.56
