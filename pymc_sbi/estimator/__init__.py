"""The trained artefact: :class:`Estimator`, and its file format (:mod:`pymc_sbi.estimator.io`)."""

from pymc_sbi.estimator.core import Estimator, load, save

__all__ = ["Estimator", "load", "save"]
