"""The benchmark command end to end, on a small budget."""

import json

import pytest

from pymc_sbi.benchmarks.__main__ import format_table, main

KEYS = {
    "task",
    "method",
    "simulations",
    "seed",
    "observation",
    "c2st",
    "simulate_s",
    "train_s",
    "sample_s",
    "peak_rss_mb",
    "epochs",
    "ess_per_s",
    "sampler",
}


def test_run_prints_json_rows(capsys):
    code = main(
        [
            "run",
            "--task",
            "two_moons",
            "--simulations",
            "1500",
            "--seed",
            "0",
            "--network",
            "maf",
            "--posterior-samples",
            "1000",
            "--c2st-samples",
            "500",
            "--json",
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 1
    row = lines[0]
    assert KEYS <= set(row)
    assert row["task"] == "two_moons" and row["simulations"] == 1500 and row["draws"] >= 1000
    # even 1,500 simulations give a posterior a classifier cannot fully separate from the
    # reference (a broken pipeline sampling the prior scores ~0.95 here)
    assert 0.4 < row["c2st"] < 0.85
    table = format_table(lines)
    assert table.splitlines()[0].startswith("| task | method")


def test_unknown_sampler_is_an_error():
    with pytest.raises(SystemExit):
        main(["run", "--sampler", "bogus"])


def test_run_npe_direct_sampling(capsys):
    code = main(
        [
            "run",
            "--method",
            "npe",
            "--simulations",
            "1000",
            "--network",
            "maf",
            "--posterior-samples",
            "1000",
            "--c2st-samples",
            "500",
            "--json",
        ]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["sampler"] == "direct" and row["draws"] == 1000
    assert 0.0 < row["acceptance_rate"] <= 1.0
    assert 0.4 < row["c2st"] < 0.9  # 1,000 simulations: far from the prior's ~0.95
