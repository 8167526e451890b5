r"""A trained neural likelihood as an observed term of a ``pm.Model``.

``NeuralLikelihood("x", estimator, params={"mu": mu, "sigma": sigma}, observed=x_obs)``
adds the surrogate log-likelihood

.. math:: \sum_{n} \log q(x_n \mid \theta), \qquad
          \theta = \mathrm{concat}(\mathrm{ravel}(\mu), \mathrm{ravel}(\sigma), \dots)

to the model, where ``x_obs`` has shape ``(..., *x_shape)`` -- any leading axes
are i.i.d. trials, each contributing one term (so pointwise log-likelihoods
for LOO/WAIC are per trial). It is a ``pm.CustomDist`` whose ``logp`` is a
JAX Op (:mod:`pymc_sbi.ops`, differentiable, with JAX dispatch) and whose
``random`` draws from the surrogate, so ``pm.sample`` (pymc, nutpie, numpyro
NUTS; Slice; SMC), ``pm.fit``, ``pm.sample_prior_predictive`` and
``pm.sample_posterior_predictive`` all work on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import pytensor.tensor as pt

from pymc_sbi.estimator import Estimator
from pymc_sbi.terms import estimator_term, stack_params

__all__ = ["NeuralLikelihood", "stack_params"]


def NeuralLikelihood(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed=None,
    *,
    dims=None,
    **kwargs,
) -> pt.TensorVariable:
    r"""Add a neural likelihood term to the current ``pm.Model``.

    Parameters
    ----------
    name
        Name of the observed variable.
    estimator
        A trained NLE :class:`~pymc_sbi.Estimator` (``kind="nle"``).
    params
        ``{name: tensor}`` for every parameter the estimator was trained on
        (``estimator.spec.names``), each of trailing shape ``spec`` shape;
        typically the model's random variables, or expressions of them.
    observed
        Observations of shape ``(..., *estimator.x_shape)``; leading axes are
        i.i.d. trials whose log-likelihoods are summed. ``None`` makes the term
        a latent variable drawn from the surrogate.
    dims
        PyMC dims of the variable (trial axes first, then the data axes).
    **kwargs
        Passed to ``pm.CustomDist`` (e.g. ``shape``).

    Returns
    -------
    TensorVariable
        The observed random variable.

    Notes
    -----
    The log-density is :math:`\sum_n \log q(x_n \mid \theta)`; gradients with
    respect to every parameter come from JAX. Sampling with PyMC's own NUTS on
    several cores needs ``mp_ctx="forkserver"`` (see :mod:`pymc_sbi.ops`).
    """
    if estimator.kind != "nle":
        raise ValueError(f"NeuralLikelihood needs an NLE estimator, got kind={estimator.kind!r}.")
    sample = jax.jit(estimator.sample)

    def random(theta, rng, size):
        batch = tuple(size) if size is not None else theta.shape[:-1]
        theta = np.broadcast_to(theta, (*batch, theta.shape[-1]))
        seed = (rng if rng is not None else np.random.default_rng()).integers(2**31)
        return np.asarray(sample(jax.random.key(int(seed)), theta), dtype=np.float64)

    return estimator_term(
        name,
        estimator,
        params,
        observed,
        log_density=estimator.log_prob,
        random=random,
        label="nle_logp",
        dims=dims,
        **kwargs,
    )
