"""ParamSpec: flattening named parameters into ``theta`` and back, labels, bounds, JSON."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from pymc_sbi.spec import ParamSpec


@pytest.fixture
def spec():
    """A scalar, a vector (2,) and a matrix (2, 3): d = 1 + 2 + 6 = 9."""
    return ParamSpec(
        names=("a", "v", "W"),
        shapes=((), (2,), (2, 3)),
        lower=(-math.inf, 0.0, 0.0, *([-1.0] * 6)),
        upper=(math.inf, math.inf, 1.0, *([2.0] * 6)),
        dims=(None, ("pair",), ("row", "col")),
        coords=(("pair", ("x", "y")), ("row", ("r0", "r1")), ("col", ("c0", "c1", "c2"))),
    )


def _values(batch, rng):
    return {
        "a": rng.normal(size=batch),
        "v": rng.normal(size=(*batch, 2)),
        "W": rng.normal(size=(*batch, 2, 3)),
    }


def test_sizes_dim_slices_labels(spec):
    assert spec.sizes == (1, 2, 6)
    assert spec.dim == 9
    assert spec.slices == {"a": slice(0, 1), "v": slice(1, 3), "W": slice(3, 9)}
    assert spec.labels == (
        "a",
        "v[0]",
        "v[1]",
        "W[0,0]",
        "W[0,1]",
        "W[0,2]",
        "W[1,0]",
        "W[1,1]",
        "W[1,2]",
    )
    assert len(spec.labels) == spec.dim


@pytest.mark.parametrize("batch", [(), (4,), (4, 5)])
def test_flatten_layout_and_round_trip(spec, batch):
    rng = np.random.default_rng(0)
    values = _values(batch, rng)
    theta = spec.flatten(values)
    assert theta.shape == (*batch, 9)
    # layout: concat of C-order ravels in spec order
    np.testing.assert_array_equal(theta[..., 0], values["a"])
    np.testing.assert_array_equal(theta[..., 1:3], values["v"])
    np.testing.assert_array_equal(theta[..., 3:9], values["W"].reshape(*batch, 6))
    for name, sl in spec.slices.items():
        np.testing.assert_array_equal(
            theta[..., sl], np.reshape(values[name], (*batch, spec.sizes[spec.names.index(name)]))
        )
    # the label of each column names the element that sits there
    W = values["W"]
    for col, label in enumerate(spec.labels):
        if label.startswith("W["):
            i, j = map(int, label[2:-1].split(","))
            np.testing.assert_array_equal(theta[..., col], W[..., i, j])
    back = spec.unflatten(theta)
    assert list(back) == ["a", "v", "W"]
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        assert back[name].shape == (*batch, *shape)
        np.testing.assert_array_equal(back[name], values[name])


def test_flatten_ignores_dict_order(spec):
    rng = np.random.default_rng(1)
    values = _values((3,), rng)
    reordered = {k: values[k] for k in ("W", "a", "v")}
    np.testing.assert_array_equal(spec.flatten(reordered), spec.flatten(values))


def test_flatten_unflatten_with_jax_numpy(spec):
    rng = np.random.default_rng(2)
    values = {k: jnp.asarray(v) for k, v in _values((3,), rng).items()}
    theta = spec.flatten(values, xp=jnp)
    assert isinstance(theta, jnp.ndarray)
    assert theta.shape == (3, 9)
    back = spec.unflatten(theta, xp=jnp)
    for name in spec.names:
        np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(values[name]))


def test_flatten_missing_name(spec):
    values = _values((2,), np.random.default_rng(0))
    del values["W"]
    with pytest.raises(ValueError, match=r"missing \['W'\]"):
        spec.flatten(values)


def test_flatten_unknown_name(spec):
    values = _values((2,), np.random.default_rng(0))
    values["zeta"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"unknown \['zeta'\]"):
        spec.flatten(values)


@pytest.mark.parametrize(
    ("bad_shape", "name"),
    [((4, 3, 2), "W"), ((4, 3), "v"), ((4, 6), "W"), ((3,), "W")],
)
def test_flatten_wrong_trailing_shape(spec, bad_shape, name):
    values = _values((4,), np.random.default_rng(0))
    values[name] = np.zeros(bad_shape)
    with pytest.raises(ValueError, match=rf"'{name}' has shape .*trailing shape"):
        spec.flatten(values)


def test_flatten_mismatched_batch_shapes(spec):
    rng = np.random.default_rng(0)
    values = _values((4,), rng)
    values["v"] = rng.normal(size=(5, 2))
    with pytest.raises(ValueError, match=r"'v' has batch shape \(5,\).*\(4,\)"):
        spec.flatten(values)


def test_unflatten_wrong_length(spec):
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 9\)"):
        spec.unflatten(np.zeros((3, 8)))


def test_constructor_validates():
    with pytest.raises(ValueError, match="unique"):
        ParamSpec(names=("a", "a"), shapes=((), ()), lower=(0.0, 0.0), upper=(1.0, 1.0))
    with pytest.raises(ValueError, match="one shape per name"):
        ParamSpec(names=("a", "b"), shapes=((),), lower=(0.0,), upper=(1.0,))
    with pytest.raises(ValueError, match="d=3"):
        ParamSpec(names=("a",), shapes=((3,),), lower=(0.0,) * 2, upper=(1.0,) * 3)


def test_default_dims_are_none():
    s = ParamSpec(names=("a", "b"), shapes=((), (2,)), lower=(0.0,) * 3, upper=(1.0,) * 3)
    assert s.dims == (None, None)


def test_in_support(spec):
    inside = np.array([-1e30, 1e-3, 0.5, -0.5, 0.0, 1.0, 1.5, 1.9, -0.9])
    assert spec.in_support(inside)  # infinite bounds accept anything finite
    rows = np.tile(inside, (5, 1))
    rows[1, 1] = -1e-9  # v[0] below its lower bound 0
    rows[2, 2] = 1.5  # v[1] above its upper bound 1
    rows[3, 8] = 2.1  # W[1,2] above 2
    rows[4, 0] = np.nan  # NaN is not inside any support
    mask = spec.in_support(rows)
    assert mask.shape == (5,)
    assert mask.tolist() == [True, False, False, False, False]
    # batch dims are kept
    assert spec.in_support(rows.reshape(5, 1, 9)).shape == (5, 1)


def test_to_dict_is_strict_json_and_round_trips(spec):
    data = spec.to_dict()
    text = json.dumps(data, allow_nan=False)  # infinite bounds must not leak into JSON
    assert data["lower"][0] is None and data["upper"][0] is None and data["upper"][1] is None
    back = ParamSpec.from_dict(json.loads(text))
    assert back == spec
    assert back.lower[0] == -math.inf and back.upper[0] == math.inf
    assert back.dims == (None, ("pair",), ("row", "col"))
    assert dict(back.coords) == {"pair": ("x", "y"), "row": ("r0", "r1"), "col": ("c0", "c1", "c2")}


def test_from_dict_without_dims_or_coords():
    data = {"names": ["a"], "shapes": [[2]], "lower": [None, 0.0], "upper": [1.0, None]}
    s = ParamSpec.from_dict(data)
    assert s.shapes == ((2,),)
    assert s.lower == (-math.inf, 0.0) and s.upper == (1.0, math.inf)
    assert s.dims == (None,) and s.coords == ()


def test_to_dict_round_trips_numpy_integer_coords():
    # pm.Model stores coords given as np.arange(...) as tuples of np.int64; they must
    # survive the JSON round trip as numbers, not as the strings "0", "1", "2".
    spec = ParamSpec(
        names=("mu",),
        shapes=((3,),),
        lower=(-math.inf,) * 3,
        upper=(math.inf,) * 3,
        dims=(("subject",),),
        coords=(("subject", tuple(np.arange(3))),),
    )
    back = ParamSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back.coords == (("subject", (0, 1, 2)),)
