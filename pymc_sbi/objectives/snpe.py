r"""Sequential neural posterior estimation: losses for simulations from a proposal.

In round :math:`r \ge 1` of sequential NPE the parameters are drawn from a
*proposal* :math:`\tilde p(\theta)` (usually the current posterior estimate
given :math:`x_o`) instead of the prior :math:`p(\theta)`.  Maximum likelihood
on such pairs fits the *proposal posterior*
:math:`\tilde p(\theta \mid x) \propto p(\theta \mid x)\,\tilde p(\theta) / p(\theta)`,
not the posterior; the two objectives here correct for that.

Batches carry two extra columns, the log densities of each :math:`\theta_i`
under the training prior and under the proposal it was drawn from::

    {"theta": (B, d), "x": (B, ...), "log_prior": (B,), "log_proposal": (B,)}

(for prior draws ``log_proposal == log_prior``).  The trained network is an
NPE network (``kind="npe"``): ``module.apply(params, z_theta, z_x)`` is
:math:`\log q(z_\theta \mid z_x)`, and :class:`~pymc_sbi.Estimator`,
:func:`pymc_sbi.direct.sampling.sample_posterior` etc. use it unchanged.

``snpe_c`` -- APT, atomic loss (Greenberg, Nonnenmacher & Macke 2019)
    For pair :math:`i` draw :math:`A - 1` other parameters of the batch,
    :math:`\Theta_i = \{\theta_i, \theta_{j_1}, \dots, \theta_{j_{A-1}}\}`, and
    minimise

    .. math::

        \mathcal{L} = -\frac1B \sum_i \log
        \frac{\exp \ell_i(\theta_i)}{\sum_{\theta' \in \Theta_i} \exp \ell_i(\theta')},
        \qquad \ell_i(\theta) = \log q(\theta \mid x_i) - \log p(\theta) .

    Its minimiser is the true posterior whatever the proposal (the proposal's
    density is never evaluated, so any proposal works, including mixtures of
    rounds).  The :math:`\theta` z-scoring Jacobian is a constant within each
    softmax and cancels.  A batch made only of prior draws (``log_proposal``
    given and equal to ``log_prior`` in every row) uses the plain NPE
    maximum-likelihood loss instead, as sbi does in round 0: both are
    consistent for the same target and MLE is the more efficient there.

``snpe_b`` -- importance-weighted maximum likelihood (Lueckmann et al. 2017)
    .. math::

        \mathcal{L} = -\sum_i \bar w_i \log q(\theta_i \mid x_i), \qquad
        \bar w_i = \frac{w_i}{\sum_k w_k}, \quad w_i = \frac{p(\theta_i)}{\tilde p(\theta_i)}

    (self-normalised over the batch, so only density *ratios* between rows
    matter: a constant added to every ``log_proposal`` cancels).  The
    weights' variance grows quickly when the proposal is much narrower than the
    prior; by default they are truncated at :math:`\bar w \sqrt{B}`
    (Ionides 2008, truncated importance sampling), which trades a small bias for
    a bounded variance.  Prefer ``snpe_c``; ``snpe_b`` is here as the
    classical baseline.

References
----------
D. Greenberg, M. Nonnenmacher, J. Macke, "Automatic Posterior Transformation
for Likelihood-Free Inference", ICML 2019, arXiv:1905.07488.
J.-M. Lueckmann, P. Gonçalves, G. Bassetto, K. Öcal, M. Nonnenmacher, J. Macke,
"Flexible statistical inference for mechanistic models of neural dynamics",
NeurIPS 2017, arXiv:1711.01861.
E. Ionides, "Truncated importance sampling", J. Comput. Graph. Stat. 17 (2008).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from pymc_sbi.objectives.base import (
    Objective,
    TrainState,
    apply_gradients,
    cast_batch,
)
from pymc_sbi.objectives.npe import npe, npe_log_prob
from pymc_sbi.objectives.nre import contrast_indices

__all__ = ["snpe_b", "snpe_c"]


def _column(batch, name: str, method: str, dtype) -> jax.Array:
    if name not in batch:
        what = (
            "the log density of each theta under the proposal it was drawn from "
            "(equal to log_prior for prior draws)"
            if name == "log_proposal"
            else "the log density of each theta under the training prior"
        )
        raise ValueError(
            f"{method} needs a batch column {name!r}: {what}. Batches must be dicts with keys "
            "'theta', 'x', 'log_prior' and 'log_proposal'; pymc_sbi.sequential.snpe builds them. "
            "A proposal without a tractable density cannot be used with this loss"
            + (" (snpe_c needs only 'log_prior')." if method == "snpe_b" else ".")
        )
    return jnp.asarray(batch[name], dtype)


def _training_step(loss_fn):
    """``step`` / ``evaluate`` from ``loss_fn(rng_key, params, state, batch)``."""

    def step(rng_key, state: TrainState, batch):
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(rng_key, state.params, state, batch)
        new = apply_gradients(state, grads)
        return new, {"loss": loss}

    def evaluate(rng_key, state: TrainState, batch):
        return {"loss": loss_fn(rng_key, state.params, state, batch)}

    return step, evaluate


def _base_init(base: Objective, method: str, columns: tuple[str, ...]):
    """``init`` of plain NPE on the ``theta``/``x`` columns (z-scoring from this batch)."""

    def init(rng_key, batch, optimizer: optax.GradientTransformation) -> TrainState:
        for name in columns:  # fail at init, not at the first step
            _column(batch, name, method, jnp.float32)
        return base.init(rng_key, {"theta": batch["theta"], "x": batch["x"]}, optimizer)

    return init


def snpe_c(
    network: nn.Module | None = None,
    num_atoms: int = 10,
    *,
    embedding: nn.Module | None = None,
    prior_batches_mle: bool = True,
    dtype=jnp.float32,
) -> Objective:
    r"""SNPE-C / APT with the atomic loss (see the module docstring).

    Parameters
    ----------
    network
        Conditional density network (default ``nn.maf()``, as :func:`~pymc_sbi.direct`).
    num_atoms
        Atoms per softmax, the true :math:`\theta_i` included (sbi's default 10);
        at most the batch size.  The contrasting atoms of each row are distinct
        other rows of the batch, drawn with the step's ``rng_key``.
    embedding
        Optional summary network for ``x``, trained jointly (as in ``npe``).
    prior_batches_mle
        Use the NPE maximum-likelihood loss on batches whose rows are all prior
        draws (detected as ``log_proposal == log_prior`` everywhere).
    dtype
        Dtype the network trains in.

    Returns
    -------
    Objective
        ``kind="npe"``. Batches need ``log_prior`` (``ValueError`` otherwise);
        ``log_proposal`` is optional (only used to detect prior-only batches).
        ``metrics["loss"]`` is the atomic loss (or the NLL of the raw ``theta``
        for prior-only batches): losses of different rounds are not comparable.
    """
    if int(num_atoms) < 2:
        raise ValueError(
            f"num_atoms must be at least 2 (the true theta and one other), got {num_atoms}."
        )
    num_atoms = int(num_atoms)
    base = npe(network, embedding, dtype=dtype)

    def atomic_loss(rng_key, params, state: TrainState, theta, x, log_prior):
        b = theta.shape[0]
        others = contrast_indices(rng_key, b, min(num_atoms, b) - 1)
        idx = jnp.concatenate([jnp.arange(b)[:, None], others], axis=1)  # (B, A), true first
        atoms = theta[idx]  # (B, A, d)
        xs = jnp.broadcast_to(x[:, None, :], (*idx.shape, x.shape[-1]))
        logits = npe_log_prob(state.module, params, state.standardization, xs, atoms)
        logits = logits - log_prior[idx]
        return -jnp.mean(jax.nn.log_softmax(logits, axis=-1)[:, 0])

    def mle_loss(params, state: TrainState, theta, x):
        lp = npe_log_prob(state.module, params, state.standardization, x, theta)
        return -jnp.mean(lp)

    def loss_fn(rng_key, params, state: TrainState, batch):
        theta, x = cast_batch(batch, dtype)
        log_prior = _column(batch, "log_prior", "snpe_c", dtype)
        if not (prior_batches_mle and "log_proposal" in batch):
            return atomic_loss(rng_key, params, state, theta, x, log_prior)
        log_proposal = jnp.asarray(batch["log_proposal"], dtype)
        all_prior = jnp.all(log_proposal == log_prior)
        return jax.lax.cond(
            all_prior,
            lambda: mle_loss(params, state, theta, x),
            lambda: atomic_loss(rng_key, params, state, theta, x, log_prior),
        )

    step, evaluate = _training_step(loss_fn)
    return Objective(
        init=_base_init(base, "snpe_c", ("log_prior",)),
        step=step,
        evaluate=evaluate,
        kind="npe",
        network=base.network,
    )


def snpe_b(
    network: nn.Module | None = None,
    *,
    embedding: nn.Module | None = None,
    truncate_weights: bool = True,
    dtype=jnp.float32,
) -> Objective:
    r"""SNPE-B: importance-weighted maximum likelihood (see the module docstring).

    Parameters
    ----------
    network
        Conditional density network (default ``nn.maf()``).
    embedding
        Optional summary network for ``x``, trained jointly.
    truncate_weights
        Truncate the self-normalised weights at :math:`\sqrt{B}` times their
        mean (then renormalise), bounding the loss's variance at the price of a
        small bias (Ionides 2008).  ``False`` gives the plain self-normalised
        estimator, whose variance can be huge when the proposal is narrow.
    dtype
        Dtype the network trains in.

    Returns
    -------
    Objective
        ``kind="npe"``.  Batches need ``log_prior`` and ``log_proposal``
        (``ValueError`` otherwise).  ``metrics["loss"]`` is the weighted NLL of
        the raw ``theta``.

    Notes
    -----
    Self-normalisation makes the loss invariant to a constant shared by all
    ``log_proposal`` values of a batch, but not to *different* constants for
    different proposals: with simulations from several rounds in one batch,
    each ``log_proposal`` must be a normalised density (or all of them off by
    the same constant).  :mod:`pymc_sbi.sequential.snpe` records the truncated
    proposal's normalised density (with the acceptance-rate estimate of its
    normaliser), or the density of the mixture of all rounds' proposals.
    """
    base = npe(network, embedding, dtype=dtype)

    def loss_fn(rng_key, params, state: TrainState, batch):
        del rng_key
        theta, x = cast_batch(batch, dtype)
        log_prior = _column(batch, "log_prior", "snpe_b", dtype)
        log_proposal = _column(batch, "log_proposal", "snpe_b", dtype)
        log_w = jax.lax.stop_gradient(log_prior - log_proposal)
        w = jax.nn.softmax(log_w)  # self-normalised, sums to 1
        if truncate_weights:
            b = theta.shape[0]
            w = jnp.minimum(w, jnp.sqrt(b) / b)
            w = w / jnp.sum(w)
        lp = npe_log_prob(state.module, params, state.standardization, x, theta)
        return -jnp.sum(w * lp)

    step, evaluate = _training_step(loss_fn)
    return Objective(
        init=_base_init(base, "snpe_b", ("log_prior", "log_proposal")),
        step=step,
        evaluate=evaluate,
        kind="npe",
        network=base.network,
    )
