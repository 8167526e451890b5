"""Diagnostics for simulation-based inference: two-sample tests, calibration checks."""

from pymc_sbi.diagnostics.c2st import c2st

__all__ = ["c2st"]
