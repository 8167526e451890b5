"""Checks that the posterior kept each neural term inside the region it was trained on."""

from __future__ import annotations

import pymc as pm

from pymc_sbi.terms.core import model_terms
from pymc_sbi.terms.draws import term_draws
from pymc_sbi.terms.range_check import OutOfRangeWarning, check_range

__all__ = ["OutOfRangeWarning", "check_posterior_range"]


def check_posterior_range(
    idata, model=None, *, margin: float = 0.05, max_draws: int = 200, warn: bool = True
) -> dict[str, list[str]]:
    """Check the parameters every neural term of ``model`` received under the posterior.

    Parameters
    ----------
    idata
        Result of ``pm.sample`` (with a ``posterior`` group).
    model
        The model (default: the one on the context stack).
    margin
        Relative margin of the training interval.
    max_draws
        Number of posterior draws (evenly thinned) to evaluate.
    warn
        Issue an :class:`OutOfRangeWarning` per offending term.

    Returns
    -------
    dict
        ``{term name: [messages]}`` for the terms with out-of-range parameters.
    """
    model = pm.modelcontext(model)
    out = {}
    for name, info in model_terms(model).items():
        theta = term_draws(model, idata, name, max_draws=max_draws).theta
        msgs = check_range(
            info.estimator,
            theta=theta,
            margin=margin,
            where=f"posterior of term {name!r}",
            warn=warn,
        )
        if msgs:
            out[name] = msgs
    return out
