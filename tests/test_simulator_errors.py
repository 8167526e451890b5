"""A simulator that fails or returns the wrong thing gets an error that says what and where,
and the simulations finished before it are kept."""

import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest

import pymc_sbi as ps
from pymc_sbi.simulation import SimulatorError, run_simulator


def _prior():
    with pm.Model() as prior:
        pm.Normal("mu")
        pm.HalfNormal("sigma")
    return prior


def _counting(fail_at=None, widths=None):
    """A NumPy simulator whose ``k``-th call raises, or returns x of width ``widths[k]``."""
    calls = {"n": 0}

    def simulator(rng, theta):
        k = calls["n"]
        calls["n"] += 1
        if k == fail_at:
            raise RuntimeError("solver diverged")
        width = 2 if widths is None else widths[min(k, len(widths) - 1)]
        return theta[:, :1] + rng.normal(size=(len(theta), width))

    return simulator


@pytest.mark.parametrize(
    ("simulator", "error", "message"),
    [
        (lambda k, t: [t[0], t[1]], TypeError, r"returned a list of 2 items in batch 0"),
        (lambda k, t: t.astype(jnp.complex64), TypeError, r"complex values \(dtype complex64\)"),
        (lambda rng, t: rng.normal(t[:, 0]), SimulatorError, r"backend='numpy'"),
    ],
)
def test_jax_backend_errors_say_what_was_expected(simulator, error, message):
    with pytest.raises(error, match=message):
        ps.simulate(_prior(), simulator, 50, seed=0, progressbar=False)


@pytest.mark.parametrize(
    ("simulator", "error", "message"),
    [
        (lambda rng, t: np.zeros(len(t), object), TypeError, r"array of Python objects"),
        (lambda rng, t: np.zeros((len(t) - 1, 2)), ValueError, r"expected \(30, \.\.\.\)"),
        (
            _counting(widths=[2, 3]),
            ValueError,
            r"shape \(3,\) per simulation in batch 1 \(simulations 30-59.*but \(2,\)",
        ),
    ],
)
def test_numpy_backend_output_errors_name_the_batch(simulator, error, message):
    with pytest.raises(error, match=message):
        ps.simulate(_prior(), simulator, 100, seed=0, backend="numpy", batch_size=30,
                    progressbar=False)  # fmt: skip


def test_an_exception_names_batch_indices_and_seed_and_keeps_finished_work():
    prior = _prior()
    with pytest.raises(SimulatorError, match=r"batch 2 \(simulations 60-89 of 100") as info:
        ps.simulate(prior, _counting(fail_at=2), 100, seed=7, backend="numpy", batch_size=30,
                    progressbar=False)  # fmt: skip
    err = info.value
    assert "RuntimeError: solver diverged" in str(err) and "seed=7" in str(err)
    assert err.batch == 2 and err.indices == (60, 90) and err.theta.shape == (30, 2)
    # the 60 finished simulations are the same as those of a run that stops before the failure
    done = err.completed
    assert isinstance(done, ps.Simulations) and len(done) == 60
    full = ps.simulate(prior, _counting(), 100, seed=7, backend="numpy", batch_size=30,
                       progressbar=False)  # fmt: skip
    np.testing.assert_array_equal(done.theta, full.theta[:60])
    np.testing.assert_array_equal(done.x, full.x[:60])


def test_run_simulator_keeps_the_raw_finished_rows():
    theta = np.zeros((10, 2))
    with pytest.raises(SimulatorError) as info:
        run_simulator(_counting(fail_at=1), theta, seed=3, backend="numpy", batch_size=4)
    done_theta, done_x = info.value.completed
    assert done_theta.shape == (4, 2) and done_x.shape == (4, 2)
    assert info.value.seed == 3
