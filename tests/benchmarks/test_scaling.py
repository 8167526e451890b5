"""The hierarchical scaling benchmark's pieces, on a tiny model."""

import math

import numpy as np
import pytest

from pymc_sbi.benchmarks import scaling


@pytest.fixture(scope="module")
def estimator():
    return scaling.scaling_estimator(simulations=1000)


def test_centred_and_non_centred_models_agree(estimator):
    """Both parameterisations put the same likelihood on the same subject parameters."""
    centred = scaling._model(estimator, 3, 10, centred=True)
    non_centred = scaling._model(estimator, 3, 10, centred=False)
    mu_v, sd_v, mu_b, sd_b = 1.1, 0.2, -0.4, 0.3
    v, b = np.array([0.9, 1.2, 1.0]), np.array([-0.5, -0.3, -0.45])
    common = {"mu_v": mu_v, "mu_b": mu_b, "sigma_interval__": 0.0}
    common |= {"sd_v_log__": math.log(sd_v), "sd_b_log__": math.log(sd_b)}
    x_c, x_nc = (
        m.compile_fn(m.logp(vars=[m["x"]]), inputs=m.value_vars, on_unused_input="ignore")
        for m in (centred, non_centred)
    )
    lc = x_c(common | {"v": v, "b": b})
    lnc = x_nc(common | {"z_v": (v - mu_v) / sd_v, "z_b": (b - mu_b) / sd_b})
    np.testing.assert_allclose(lc, lnc, rtol=1e-5)


def test_timings_and_nuts_statistics(estimator):
    assert 0 < scaling.logp_grad_seconds(estimator, 2, 10, repeats=2) < 10
    res = scaling.nuts_seconds(estimator, n_groups=2, n_trials=10, draws=20, chains=2)
    assert res["wall_s"] > 0 and res["cpu_s"] > 0
    assert res["mean_tree_size"] >= 1 and res["step_size"] > 0
    assert math.isfinite(res["max_rhat"])
