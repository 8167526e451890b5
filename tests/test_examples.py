"""The demo example (``make demo``) meets its target on the full budget."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_moons.py"


@pytest.mark.slow
def test_two_moons_demo_meets_c2st_target(tmp_path):
    spec = importlib.util.spec_from_file_location("two_moons_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    score = module.main(tmp_path, simulations=10_000, seed=0)
    assert score <= 0.60  # issue target; sbi 0.27's NLE scored 0.58 on this observation
    assert (tmp_path / "two_moons_posterior.png").stat().st_size > 10_000
    assert (tmp_path / "two_moons_nle.safetensors").exists()
