"""Loading checks every stored tensor against the network the metadata rebuilds."""

import json

import jax
import numpy as np
import optax
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

import pymc_sbi as ps
from pymc_sbi.spec import ParamSpec

SPEC = ParamSpec(
    names=("a", "b"), shapes=((), ()), lower=(-np.inf, -np.inf), upper=(np.inf, np.inf)
)
rng = np.random.default_rng(0)
BATCH = {"theta": rng.normal(size=(64, 2)), "x": rng.normal(size=(64, 3))}

NETS = {
    "nle-maf": (ps.nle, ps.nn.maf(num_transforms=2, hidden_features=8)),
    "nle-nsf": (ps.nle, ps.nn.nsf(num_transforms=1, hidden_features=8)),
    "nle-mdn": (ps.nle, ps.nn.mdn(num_components=2, hidden_features=8)),
    "npe-maf": (ps.npe, ps.nn.maf(num_transforms=2, hidden_features=8)),
    "nre-mlp": (ps.nre_c, ps.nn.mlp_classifier(hidden_features=8)),
    "nre-resnet": (ps.nre_b, ps.nn.resnet_classifier(hidden_features=8)),
}


def _untrained(make, net, members=None) -> ps.Estimator:
    objective = make(net)
    init = lambda k: objective.init(k, BATCH, optax.adam(1e-3))
    if members is None:
        state = init(jax.random.key(0))
    else:
        state = jax.vmap(init)(jax.random.split(jax.random.key(0), members))
    return ps.Estimator.from_state(objective.kind, state, SPEC, (3,), members=members)


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_family_round_trips_through_the_check(name, tmp_path):
    est = _untrained(*NETS[name])
    est.save(tmp_path / "e.safetensors")
    loaded = ps.load(tmp_path / "e.safetensors")
    theta, x = BATCH["theta"][:5], BATCH["x"][:5]
    value = (
        (lambda e: e.log_ratio(x, theta))
        if est.role == "ratio"
        else (lambda e: e.log_prob(x, theta))
    )
    np.testing.assert_array_equal(value(loaded), value(est))


def test_ensemble_round_trips_with_its_member_axis(tmp_path):
    est = _untrained(*NETS["nle-maf"], members=3)
    est.save(tmp_path / "e.safetensors")
    loaded = ps.load(tmp_path / "e.safetensors")
    assert loaded.members == 3
    np.testing.assert_array_equal(
        loaded.log_prob(BATCH["x"][:4], BATCH["theta"][:4]),
        est.log_prob(BATCH["x"][:4], BATCH["theta"][:4]),
    )


def _tamper(src, dst, **network_changes):
    with safe_open(str(src), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    net = json.loads(meta["network"])
    net["config"].update(network_changes)
    meta["network"] = json.dumps(net)
    save_file(tensors, str(dst), meta)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        # fewer transforms than the file holds: once loaded silently with a wrong log_prob
        ({"num_transforms": 1}, r"unused: params/params/mades_1/"),
        ({"num_transforms": 3}, r"missing: params/params/mades_2/"),
        (
            {"hidden_features": 16},
            r"shape: params/params/mades_0/\w+/\w+: file \(\d+(, \d+)?,?\), ",
        ),
    ],
)
def test_metadata_that_disagrees_with_the_tensors_is_refused(tmp_path, change, what):
    est = _untrained(*NETS["nle-maf"])
    est.save(tmp_path / "good.safetensors")
    _tamper(tmp_path / "good.safetensors", tmp_path / "bad.safetensors", **change)
    with pytest.raises(ValueError, match="do not match the network") as info:
        ps.load(tmp_path / "bad.safetensors")
    assert info.match(what)


def test_versions_are_recorded_and_shown(tmp_path):
    from importlib.metadata import version

    est = _untrained(*NETS["nle-maf"])
    est.save(tmp_path / "e.safetensors")
    loaded = ps.load(tmp_path / "e.safetensors")
    assert loaded.versions["jax"] == version("jax")
    assert loaded.versions["flax"] == version("flax")
    assert set(loaded.versions) == {"pymc-sbi", "jax", "flax"}
    assert f"jax {version('jax')}" in repr(loaded)
