"""The ``sbc`` benchmark subcommand, end to end with a tiny budget."""

import json

import pytest

from pymc_sbi.benchmarks.__main__ import main


@pytest.mark.slow  # ~20-50 s of compilation and training; run_sbc itself is in test_sbc.py
def test_sbc_subcommand_prints_a_row(capsys):
    argv = ["sbc", "--method", "npe", "--datasets", "20", "--simulations", "500",
            "--posterior-samples", "20", "--max-epochs", "5"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["method"] == "npe" and row["datasets"] == 20 and row["posterior_samples"] == 20
    assert row["sbc_s"] >= row["inference_s"] > 0
    assert 0.0 <= row["min_p_pot_c"] <= 1.0 and 0.0 <= row["hpd_max_error"] <= 1.0
