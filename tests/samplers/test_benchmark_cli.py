"""The benchmark's sampler registry and ``--sampler NAME:CHAINSxDRAWS`` parsing."""

import json

import pytest

from pymc_sbi.benchmarks.__main__ import main
from pymc_sbi.benchmarks.runner import SAMPLERS, parse_sampler, register_sampler


def test_parse_sampler_specs():
    assert parse_sampler("mala") == ("mala", None, None)
    assert parse_sampler("numpyro:40") == ("numpyro", 40, None)
    assert parse_sampler("blackjax-nuts:1000x100") == ("blackjax-nuts", 1000, 100)
    with pytest.raises(ValueError, match="Unknown sampler"):
        parse_sampler("gibbs")
    with pytest.raises(ValueError, match="CHAINSxDRAWS"):
        parse_sampler("mala:ax3")
    assert {
        "numpyro",
        "nutpie",
        "pymc",
        "blackjax-nuts",
        "hmc",
        "mala",
        "rmh",
        "slice",
        "imh",
    } <= set(SAMPLERS)


def test_register_sampler_adds_one_entry():
    register_sampler("dummy", lambda *a: None, 3)
    try:
        assert parse_sampler("dummy") == ("dummy", None, None) and SAMPLERS["dummy"][1] == 3
    finally:
        SAMPLERS.pop("dummy")


def test_cli_rejects_unknown_sampler():
    with pytest.raises(SystemExit):
        main(["run", "--sampler", "mala,gibbs"])


@pytest.mark.slow
def test_cli_runs_blackjax_kernels(capsys):
    code = main(
        [
            "run",
            "--simulations",
            "1500",
            "--network",
            "maf",
            "--sampler",
            "mala:100x10,slice:50x20",
            "--posterior-samples",
            "1000",
            "--c2st-samples",
            "500",
            "--json",
        ]
    )
    assert code == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [(r["sampler"], r["chains"], r["draws"]) for r in rows] == [
        ("mala:100x10", 100, 1000),
        ("slice:50x20", 50, 1000),
    ]
    assert all(0.4 < r["c2st"] <= 1.0 for r in rows)
