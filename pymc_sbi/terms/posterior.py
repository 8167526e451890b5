r"""An amortised neural posterior (NPE) as a term of a larger ``pm.Model``.

If :math:`q(\theta \mid x) \approx p(\theta \mid x) \propto p(x \mid \theta)\, p_0(\theta)`
was trained with prior :math:`p_0`, then

.. math:: \log q(\theta \mid x) - \log p_0(\theta) = \log p(x \mid \theta) + \text{const}(x)

is an *implied log-likelihood*. ``NeuralPosterior`` adds it, per observation, to a
model, so the amortised posterior can be combined with a different prior, other
data or a hierarchy, and sampled with NUTS:

.. math:: \log p(\theta \mid x_{1:n}, \dots) = \log p_{\text{new}}(\theta)
          + \sum_i \left[\log q(\theta \mid x_i) - \log p_0(\theta)\right] + \dots

When this is valid
------------------
* :math:`q` must be accurate where the new posterior puts its mass: inside the
  support of :math:`p_0` and not deep in its tails, where :math:`q` saw few
  simulations. Outside the support of :math:`p_0` the term is :math:`-\infty`.
* Each :math:`x_i` must be a data set of the kind the NPE was trained on
  (one simulator output). Several independent data sets each contribute one
  term; the errors of :math:`q` add up over them, so prefer NLE for many i.i.d.
  trials.
* :math:`q` is the flow's density without leakage correction; the correction
  (a function of :math:`x` only) is a constant for the sampler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pymc as pm
import pytensor.tensor as pt

from pymc_sbi.estimator import Estimator
from pymc_sbi.prior import prior_log_density
from pymc_sbi.terms.core import estimator_term

__all__ = ["NeuralPosterior"]


def _no_random(theta, rng, size):
    raise NotImplementedError(
        "A NeuralPosterior term cannot draw data: a posterior estimator has no generative "
        "model of x. Train an NLE (ps.nle) for predictive checks."
    )


def NeuralPosterior(
    name: str,
    estimator: Estimator,
    params: Mapping[str, Any],
    observed,
    prior: pm.Model,
    *,
    dims=None,
    **kwargs,
) -> pt.TensorVariable:
    r"""Add :math:`\sum_i [\log q(\theta \mid x_i) - \log p_0(\theta)]` to the current model.

    Parameters
    ----------
    name
        Name of the observed variable.
    estimator
        A trained NPE :class:`~pymc_sbi.Estimator` (``kind="npe"``).
    params
        ``{name: tensor}`` for every parameter in ``estimator.spec.names``.
    observed
        One data set ``x_shape``, or several independent ones ``(n, *x_shape)``.
    prior
        The prior model the NPE was trained with (:math:`p_0`).
    dims
        PyMC dims of the observed variable.
    **kwargs
        Passed to ``pm.CustomDist``.

    Notes
    -----
    See the module docstring for when this is valid.
    """
    if estimator.kind != "npe":
        raise ValueError(f"NeuralPosterior needs an NPE estimator, got kind={estimator.kind!r}.")
    if observed is None:
        raise ValueError("NeuralPosterior needs observed data.")
    # validate against the prior now (clear errors at model-building time)
    theta_probe = pt.vector("theta", shape=(estimator.spec.dim,))
    prior_log_density(prior, estimator.spec, theta_probe)

    def correction(theta):
        return -prior_log_density(prior, estimator.spec, theta)

    return estimator_term(
        name,
        estimator,
        params,
        observed,
        log_density=estimator.log_prob,
        random=_no_random,
        label="npe_logq",
        correction=correction,
        dims=dims,
        truncate_support=True,  # -log p_0 is +inf outside the prior support
        **kwargs,
    )
