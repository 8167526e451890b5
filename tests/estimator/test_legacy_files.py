"""Estimator files written before the layout change (formats 1 and 2) still load.

The fixtures in ``tests/data/estimators`` were written by pymc_sbi at commit
97c1382 with ``make_fixtures.py``; ``expected.json`` holds the log densities
that code computed. Loading them with today's code must give the same numbers.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import pymc_sbi as ps

DATA = Path(__file__).parents[1] / "data" / "estimators"
EXPECTED = json.loads((DATA / "expected.json").read_text())


@pytest.mark.parametrize(
    ("name", "version", "kind", "members"),
    [("format1_nle_maf", "1", "nle", None), ("format2_npe_ensemble", "2", "npe", 2)],
)
def test_old_file_loads_and_gives_the_old_log_prob(name, version, kind, members):
    from safetensors import safe_open

    path = DATA / f"{name}.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata()["version"] == version
    est = ps.load(path)
    assert est.kind == kind
    assert est.members == members
    assert est.spec.names == ("mu", "sigma")
    case = EXPECTED[name]
    got = np.asarray(est.log_prob(np.asarray(case["x"]), np.asarray(case["theta"])))
    # float32 network: the same program on the same inputs, up to float32 rounding
    np.testing.assert_allclose(got, case["log_prob"], rtol=1e-5, atol=1e-5)
