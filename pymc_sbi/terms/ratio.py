r"""A trained neural ratio estimator as a term of a ``pm.Model``.

``NeuralRatio("x", estimator, params={"theta": theta}, observed=x_obs)`` adds

.. math:: \sum_n \log r(x_n, \theta), \qquad
          r(x, \theta) \approx \frac{p(x \mid \theta)}{p(x)},

to the model's log density. Since :math:`p(x_n)` does not depend on
:math:`\theta`, this equals the log-likelihood up to a constant, so with the
training prior the model's posterior is the NRE posterior, and with any other
prior (or inside a larger model) it is that prior times the estimated
likelihood. For NRE-B the ratio is known only up to an additive function of
``x``, which is also constant in :math:`\theta`.

A ratio cannot generate data: prior/posterior predictive sampling of this
variable raises ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytensor.tensor as pt

from pymc_sbi.estimator import Estimator
from pymc_sbi.terms.core import estimator_term

__all__ = ["NeuralRatio"]


def _no_random(theta, rng, size):
    raise NotImplementedError(
        "A NeuralRatio term cannot draw data: a ratio estimator has no generative model. "
        "Train an NLE (ps.nle) for predictive checks."
    )


def NeuralRatio(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed,
    *,
    dims=None,
    truncate_to_training_support: bool = False,
    **kwargs,
) -> pt.TensorVariable:
    r"""Add a neural log-ratio term :math:`\sum_n \log r(x_n, \theta)` to the current model.

    Parameters
    ----------
    name
        Name of the observed variable.
    estimator
        A trained NRE :class:`~pymc_sbi.Estimator` (``kind="nre"``: NRE-A/B/C, BNRE).
    params
        ``{name: tensor}`` for every parameter in ``estimator.spec.names``.
    observed
        Observations ``(..., *x_shape)``; leading axes are i.i.d. trials (summed).
    dims
        PyMC dims of the observed variable.
    truncate_to_training_support
        ``True``: the term is ``-inf`` wherever a parameter lies outside the
        support it was trained on (``estimator.spec.lower``/``upper``), instead
        of the network's extrapolation. Off by default: hierarchical models
        often put wider priors on parameters trained on a bounded box, and a
        hard edge makes such models fail at their initial points. Either way a
        :class:`~pymc_sbi.terms.SupportWarning` names the variables whose model
        support is wider than their training support.
    **kwargs
        Passed to ``pm.CustomDist``.
    """
    if estimator.kind != "nre":
        raise ValueError(f"NeuralRatio needs an NRE estimator, got kind={estimator.kind!r}.")
    if observed is None:
        raise ValueError("NeuralRatio needs observed data: a ratio cannot generate x.")
    return estimator_term(
        name,
        estimator,
        params,
        observed,
        log_density=estimator.log_ratio,
        random=_no_random,
        label="nre_logr",
        dims=dims,
        truncate_support=truncate_to_training_support,
        **kwargs,
    )
