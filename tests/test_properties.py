"""Property-based checks (hypothesis) over shapes and dtypes: simulate, the term builder, load.

Every input either works and gives the value a direct computation gives, or is refused
with a ValueError/TypeError that says what was expected; no other exception escapes.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pymc as pm
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

import pymc_sbi as ps

DATA = Path(__file__).parent / "data" / "estimators"
NLE = ps.load(DATA / "format1_nle_maf.safetensors")  # theta = (mu, sigma), x_shape (2,)
SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


def _prior():
    with pm.Model() as prior:
        pm.Normal("mu")
        pm.HalfNormal("sigma")
    return prior


@SETTINGS
@given(shape=shapes, dtype=st.sampled_from(["float32", "float64", "int32", "bool", "complex64"]))
def test_simulate_keeps_any_real_output_shape_and_refuses_complex(shape, dtype):
    def simulator(key, theta):
        return (jnp.ones(shape) * theta[0]).astype(dtype)

    if dtype == "complex64":
        with pytest.raises(TypeError, match="complex"):
            ps.simulate(_prior(), simulator, 7, seed=0, progressbar=False)
        return
    sims = ps.simulate(_prior(), simulator, 7, seed=0, progressbar=False)
    event = shape or (1,)  # a scalar output is one column
    assert sims.x.shape == (7, *event)
    expected = np.broadcast_to(sims.theta[:, :1].reshape(7, *([1] * len(event))), (7, *event))
    np.testing.assert_array_equal(sims.x, np.asarray(expected).astype(dtype))


@SETTINGS
@given(
    obs_batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    mu_batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
)
def test_term_builds_when_batches_align_and_names_the_variable_otherwise(obs_batch, mu_batch):
    observed = np.linspace(-1, 1, int(np.prod(obs_batch)) * 2).reshape(*obs_batch, 2)
    aligned = obs_batch[: len(mu_batch)] if len(mu_batch) < len(obs_batch) else obs_batch
    ok = not mu_batch or (
        len(mu_batch) <= len(obs_batch)
        and all(m in (1, o) for m, o in zip(mu_batch, aligned, strict=True))
    )
    with pm.Model() as model:
        mu = pm.Normal("mu", shape=mu_batch)
        sigma = pm.HalfNormal("sigma")
        if not ok:
            with pytest.raises(ValueError, match="parameter 'mu' has batch shape"):
                ps.NeuralLikelihood("x", NLE, {"mu": mu, "sigma": sigma}, observed=observed)
            return
        ps.NeuralLikelihood("x", NLE, {"mu": mu, "sigma": sigma}, observed=observed)
    point = model.initial_point()  # mu = 0, sigma = 1 everywhere
    lik = model.compile_logp(vars=[model["x"]])(point)
    expected = np.sum(NLE.log_prob(observed, np.array([0.0, 1.0])))
    np.testing.assert_allclose(lik, expected, rtol=1e-5)


@SETTINGS
@given(
    num_transforms=st.integers(1, 3),
    hidden_features=st.sampled_from([4, 8, 16]),
    num_hidden=st.integers(1, 3),
)
def test_load_accepts_only_metadata_that_matches_the_tensors(
    tmp_path_factory, num_transforms, hidden_features, num_hidden
):
    src = DATA / "format1_nle_maf.safetensors"
    with safe_open(str(src), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    net = json.loads(meta["network"])
    change = {"num_transforms": num_transforms, "hidden_features": hidden_features,
              "num_hidden": num_hidden}  # fmt: skip
    same = all(net["config"][k] == v for k, v in change.items())
    net["config"].update(change)
    meta["network"] = json.dumps(net)
    path = tmp_path_factory.mktemp("load") / "e.safetensors"
    save_file(tensors, str(path), meta)
    if same:
        loaded = ps.load(path)
        x, theta = np.zeros((3, 2)), np.array([[0.1, 0.5]] * 3)
        np.testing.assert_array_equal(loaded.log_prob(x, theta), NLE.log_prob(x, theta))
    else:
        with pytest.raises(ValueError, match="do not match the network"):
            ps.load(path)
