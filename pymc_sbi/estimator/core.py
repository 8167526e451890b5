"""The trained estimator: network + parameters + standardisation + parameter spec.

An :class:`Estimator` is immutable. Its methods are pure JAX functions of
their array arguments (the parameters are closed over), so they can be
``jit``-ed, ``vmap``-ed and differentiated, and they are what the PyMC terms
wrap into PyTensor Ops. The network calls inside them are jitted once per
network definition and input shape (the parameters are arguments, not
constants), so eager calls are fast too and estimators that share a network
architecture share compiled code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pymc_sbi.estimator import io
from pymc_sbi.estimator.checks import check_params, library_versions
from pymc_sbi.nn import network_config, network_from_config
from pymc_sbi.objectives.base import flatten_x
from pymc_sbi.objectives.covariates import DataRange
from pymc_sbi.objectives.registry import get_kind
from pymc_sbi.objectives.standardize import Standardization
from pymc_sbi.spec import ParamSpec

__all__ = ["Estimator", "load", "save"]

# Network conventions per kind (z_* are z-scored inputs; see objectives/registry.py):
#   nle: apply(params, z_x, z_theta) -> log q(z_x | z_theta); sample(rng, z_theta) -> z_x
#   mnle: as nle, x = (continuous..., category) (see objectives/mnle.py)
#   nle/mnle with covariates: z_theta is the z-scored context (theta, covariates)
#   npe: apply(params, z_theta, z_x) -> log q(z_theta | z_x); sample(rng, z_x) -> z_theta
#   nre: apply(params, z_theta, z_x) -> logit = log r(x, theta)


@partial(jax.jit, static_argnums=(0, 1))
def _log_prob(kind, module, params, std: Standardization, x, theta):
    return get_kind(kind).log_prob(module, params, std, x, theta)


@partial(jax.jit, static_argnums=(0, 1))
def _sample(kind, module, params, std: Standardization, rng_key, condition):
    return get_kind(kind).sample(module, params, std, rng_key, condition)


def _members(params) -> int:
    return int(jax.tree.leaves(params)[0].shape[0])


@partial(jax.jit, static_argnums=(0, 1))
def _member_log_prob(kind, module, params, std: Standardization, x, theta):
    """``_log_prob`` of every member: params with a leading member axis -> ``(E, *batch)``."""
    return jax.vmap(lambda p: _log_prob(kind, module, p, std, x, theta))(params)


@partial(jax.jit, static_argnums=(0, 1))
def _mixture_log_prob(kind, module, params, std: Standardization, x, theta):
    r"""Log-mean-exp over members: :math:`\log \frac1E \sum_e \exp \ell_e`."""
    values = _member_log_prob(kind, module, params, std, x, theta)
    return jax.nn.logsumexp(values, axis=0) - jnp.log(values.shape[0]).astype(values.dtype)


@partial(jax.jit, static_argnums=(0, 1))
def _mixture_sample(kind, module, params, std: Standardization, rng_key, condition):
    """One draw per condition row from the uniform mixture of the members.

    Every member draws for every row (``vmap`` over members) and each row keeps
    the draw of a uniformly chosen member: ``E`` times the work of one draw, but
    one static-shape program (the member counts of a multinomial would not be).
    """
    k_pick, k_draw = jax.random.split(rng_key)
    e = _members(params)
    keys = jax.random.split(k_draw, e)
    draws = jax.vmap(lambda p, k: _sample(kind, module, p, std, k, condition))(params, keys)
    pick = jax.random.randint(k_pick, draws.shape[1:-1], 0, e)
    return jnp.take_along_axis(draws, pick[None, ..., None], axis=0)[0]


@dataclass(frozen=True, eq=False)
class Estimator:
    r"""A trained neural estimator with everything needed to use it.

    Attributes
    ----------
    kind
        Which quantity the network estimates: ``"nle"`` -- the likelihood
        :math:`q(x \mid \theta)`; ``"npe"`` -- the posterior :math:`q(\theta \mid x)`;
        ``"nre"`` -- the likelihood-to-evidence ratio :math:`r(x, \theta)`.
    module
        The flax network (with ``features`` set).
    params
        Trained network parameters.
    standardization
        Z-scoring statistics of the training data.
    spec
        Names, shapes and bounds of ``theta``.
    x_shape
        Shape of one observation ``x``.
    history
        Training history (losses per epoch, stopping reason, timings).
    config
        Training configuration.
    data_range
        Per-dimension min/max of the training context and data (``None`` for
        estimators trained without it); see :mod:`pymc_sbi.terms.range_check`.
    members
        ``None`` for one network; ``E`` for an *ensemble* of ``E`` networks
        (every leaf of ``params`` has a leading member axis of length ``E``;
        the z-scoring statistics are shared). See Notes and
        :func:`pymc_sbi.fit_ensemble`.
    versions
        Versions of pymc_sbi, jax and flax that wrote the file (``{}`` for an
        estimator trained in this process); shown by ``repr``.

    Notes
    -----
    Likelihood estimators (``nle``, ``mnle``) trained on simulations with
    per-trial covariates condition on :math:`(\theta, s)`; ``n_covariates``
    says how many, and :meth:`log_prob`/:meth:`sample` then need ``covariates``.

    An ensemble is the uniform mixture of its members,

    .. math:: q(x \mid \theta) = \frac1E \sum_{e=1}^E q_e(x \mid \theta), \qquad
              \log q = \operatorname{logsumexp}_e \log q_e - \log E

    (NLE/MNLE; :math:`q(\theta \mid x)` likewise for NPE), so :meth:`log_prob`
    is a normalised density and :meth:`sample` draws from the mixture (a
    uniformly chosen member per draw). For ratio estimators :meth:`log_ratio`
    is the log-mean-exp of the members' ratios,
    :math:`\log \frac1E \sum_e r_e(x, \theta)`: the implied posterior
    :math:`p(\theta) \bar r(x, \theta)` is the uniform mixture of the members'
    posteriors when each :math:`r_e` is normalised
    (:math:`\int p(\theta) r_e \, d\theta = 1`, the target of NRE-A/C and BNRE);
    for NRE-B, whose members are each off by their own :math:`c_e(x)`, it is
    the mixture weighted by :math:`e^{c_e(x)}`. :meth:`member_log_prob`,
    :meth:`member_log_ratio`, :meth:`member` and :meth:`disagreement` expose
    the members. Every method (and so every PyMC term built on the
    estimator) uses the mixture; gradients flow through the ``logsumexp``.
    """

    kind: str
    module: nn.Module
    params: Any
    standardization: Standardization
    spec: ParamSpec
    x_shape: tuple[int, ...]
    history: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    data_range: DataRange | None = None
    members: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_kind(self.kind)  # a ValueError naming the known kinds
        object.__setattr__(self, "x_shape", tuple(int(s) for s in self.x_shape))
        if self.members is not None:
            e = int(self.members)
            object.__setattr__(self, "members", e)
            shapes = {tuple(np.shape(a))[:1] for a in jax.tree.leaves(self.params)}
            if e < 1 or shapes != {(e,)}:
                raise ValueError(
                    f"An ensemble of {self.members} members needs every parameter leaf to have "
                    f"a leading member axis of that length; found leading shapes {shapes}."
                )

    @classmethod
    def from_state(
        cls,
        kind: str,
        state,
        spec: ParamSpec,
        x_shape,
        history=None,
        config=None,
        members: int | None = None,
    ):
        """Build an estimator from a final :class:`~pymc_sbi.objectives.TrainState`.

        With ``members=E``, ``state`` is an ensemble state (every leaf with a
        leading member axis, as :class:`pymc_sbi.Runner` ``(members=E)`` makes
        it): the parameters keep the axis, the (shared) z-scoring statistics and
        data range are taken from member 0.
        """
        std = state.standardization
        data_range = getattr(state, "data_range", None)
        if members is not None:
            first = lambda tree: jax.tree.map(lambda a: a[0], tree)
            std = first(std)
            data_range = None if data_range is None else first(data_range)
        return cls(
            kind=kind,
            module=state.module,
            params=state.params,
            standardization=std,
            spec=spec,
            x_shape=tuple(x_shape),
            history=dict(history or {}),
            config=dict(config or {}),
            data_range=data_range,
            members=members,
        )

    # ------------------------------------------------------------ properties
    @property
    def role(self) -> str:
        """``"likelihood"`` (NLE, MNLE), ``"posterior"`` (NPE) or ``"ratio"`` (NRE)."""
        return get_kind(self.kind).role

    @property
    def dtype(self):
        """Dtype the network computes in."""
        return jax.tree.leaves(self.params)[0].dtype

    @property
    def x_dim(self) -> int:
        """Number of elements of one observation."""
        return math.prod(self.x_shape)

    @property
    def n_covariates(self) -> int:
        """Number of per-trial covariates the likelihood conditions on (0 for none)."""
        if self.role != "likelihood":
            return 0
        return int(self.standardization.theta_mean.shape[-1]) - self.spec.dim

    def astype(self, dtype) -> Estimator:
        """A copy that computes in ``dtype`` (e.g. ``jnp.float64`` for exact gradient checks)."""
        cast = lambda a: jnp.asarray(a, dtype)
        return replace(
            self,
            params=jax.tree.map(cast, self.params),
            standardization=Standardization(*map(cast, self.standardization)),
        )

    def member(self, i: int) -> Estimator:
        """Member ``i`` of an ensemble as a single-network estimator."""
        if self.members is None:
            raise TypeError("member(i) needs an ensemble estimator (members is None).")
        if not -self.members <= int(i) < self.members:
            raise IndexError(f"member {i} out of range for {self.members} members.")
        params = jax.tree.map(lambda a: a[int(i)], self.params)
        return replace(self, params=params, members=None)

    # ----------------------------------------------------------- shape checks
    def _check_theta(self, theta: jax.Array) -> None:
        if theta.ndim < 1 or theta.shape[-1] != self.spec.dim:
            raise ValueError(
                f"theta has shape {tuple(theta.shape)}; expected (..., {self.spec.dim}) with "
                f"columns {list(self.spec.labels)}."
            )

    def _check_x(self, x: jax.Array) -> tuple[int, ...]:
        k = len(self.x_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k :]) != self.x_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (..., {', '.join(map(str, self.x_shape))})"
                f" -- trailing shape {self.x_shape} as in training."
            )
        return tuple(x.shape[: x.ndim - k])

    # -------------------------------------------------------------- methods
    def _covariates(self, covariates) -> jax.Array | None:
        c = self.n_covariates
        if covariates is None:
            if c:
                raise ValueError(
                    f"This estimator was trained with {c} per-trial covariate(s); pass "
                    f"covariates of shape (..., {c})."
                )
            return None
        if not c:
            raise ValueError("This estimator was trained without covariates; pass covariates=None.")
        covariates = jnp.asarray(covariates)
        if covariates.ndim < 1 or covariates.shape[-1] != c:
            raise ValueError(
                f"covariates have shape {tuple(covariates.shape)}; expected (..., {c})."
            )
        return covariates

    def _context(self, theta, covariates, batch) -> jax.Array:
        """``theta`` (and covariates) broadcast to ``(*batch, d [+ c])``, in the network dtype."""
        tf = jnp.broadcast_to(theta, (*batch, self.spec.dim)).astype(self.dtype)
        if covariates is None:
            return tf
        cf = jnp.broadcast_to(covariates, (*batch, covariates.shape[-1])).astype(self.dtype)
        return jnp.concatenate([tf, cf], axis=-1)

    def _pairs(self, x, theta, covariates=None):
        """Validate, broadcast and cast ``x``, ``theta`` (+ covariates) to flat network inputs."""
        x = jnp.asarray(x)
        theta = jnp.asarray(theta)
        self._check_theta(theta)
        xb = self._check_x(x)
        cov = self._covariates(covariates)
        out_dtype = jnp.result_type(x.dtype, theta.dtype, jnp.float32)
        shapes = [xb, theta.shape[:-1]] + ([] if cov is None else [cov.shape[:-1]])
        batch = jnp.broadcast_shapes(*shapes)
        dt = self.dtype
        xf = jnp.broadcast_to(flatten_x(x, len(self.x_shape)), (*batch, self.x_dim)).astype(dt)
        return xf, self._context(theta, cov, batch), out_dtype

    def log_prob(self, x, theta, covariates=None) -> jax.Array:
        r"""Log density of the surrogate.

        :math:`\log q(x \mid \theta)` (NLE) or :math:`\log q(\theta \mid x)`
        (NPE, without leakage correction).

        Parameters
        ----------
        x
            ``(..., *x_shape)`` observations.
        theta
            ``(..., d)`` parameters; leading shapes broadcast against ``x``'s.
        covariates
            ``(..., c)`` per-trial covariates, for estimators trained with them
            (``n_covariates > 0``); leading shapes broadcast too.

        Returns
        -------
        jax.Array
            ``broadcast(x_batch, theta_batch)``-shaped log densities, in the
            floating dtype of the inputs (float32 inputs give float32).
        """
        if self.role == "ratio":
            raise TypeError("A ratio estimator has no density; use log_ratio(x, theta).")
        xf, tf, out_dtype = self._pairs(x, theta, covariates)
        fn = _log_prob if self.members is None else _mixture_log_prob
        lp = fn(self.kind, self.module, self.params, self.standardization, xf, tf)
        return lp.astype(out_dtype)

    def log_ratio(self, x, theta) -> jax.Array:
        r"""Log ratio of a ratio estimator (NRE).

        :math:`\log r(x, \theta) \approx \log p(x \mid \theta) - \log p(x)`
        (for NRE-B, up to an additive function of ``x``). Shapes as :meth:`log_prob`.
        """
        if self.role != "ratio":
            raise TypeError(f"log_ratio needs a ratio estimator (kind 'nre'), not {self.kind!r}.")
        xf, tf, out_dtype = self._pairs(x, theta)
        fn = _log_prob if self.members is None else _mixture_log_prob
        lr = fn(self.kind, self.module, self.params, self.standardization, xf, tf)
        return lr.astype(out_dtype)

    # ------------------------------------------------------------- ensembles
    def _member_values(self, x, theta, covariates=None) -> jax.Array:
        if self.members is None:
            raise TypeError("This is not an ensemble estimator (members is None).")
        xf, tf, out_dtype = self._pairs(x, theta, covariates)
        v = _member_log_prob(self.kind, self.module, self.params, self.standardization, xf, tf)
        return v.astype(out_dtype)

    def member_log_prob(self, x, theta, covariates=None) -> jax.Array:
        r"""Ensembles: every member's :math:`\log q_e`, shape ``(members, *batch)``.

        :meth:`log_prob` is its log-mean-exp over the first axis.
        """
        if self.role == "ratio":
            raise TypeError("A ratio estimator has no density; use member_log_ratio(x, theta).")
        return self._member_values(x, theta, covariates)

    def member_log_ratio(self, x, theta) -> jax.Array:
        r"""Ensembles of ratio estimators: each member's :math:`\log r_e`, ``(members, *batch)``."""
        if self.role != "ratio":
            raise TypeError(f"member_log_ratio needs a ratio estimator, not {self.kind!r}.")
        return self._member_values(x, theta)

    def disagreement(self, x, theta, covariates=None) -> jax.Array:
        r"""Ensembles: standard deviation over members of the log density (or log ratio).

        .. math:: s(x, \theta) = \sqrt{\frac1E \sum_e (\ell_e - \bar\ell)^2},
                  \qquad \ell_e = \log q_e(x \mid \theta) \text{ (or } \log r_e),

        an epistemic-uncertainty diagnostic: members trained on the same
        simulations from different initialisations and shuffles agree where
        the simulations pin the function down and disagree away from them
        (extrapolation, too few simulations, an under-trained network). It is
        in nats: 0.1 means the members' densities differ by about 10%.

        Returns
        -------
        jax.Array
            ``(*batch)``, shaped like :meth:`log_prob`'s output.
        """
        values = self._member_values(x, theta, covariates)
        return jnp.std(values, axis=0)

    def sample(
        self, rng_key, condition, num_samples: int | None = None, covariates=None
    ) -> jax.Array:
        """Draw from the surrogate: ``x ~ q(x | theta)`` (NLE) or ``theta ~ q(theta | x)`` (NPE).

        Parameters
        ----------
        rng_key
            JAX PRNG key.
        condition
            NLE: ``theta`` of shape ``(..., d)``; NPE: ``x`` of shape ``(..., *x_shape)``.
        num_samples
            Number of draws per condition; ``None`` for one draw without the
            leading axis.
        covariates
            Likelihood estimators with covariates: ``(..., c)``, broadcast
            against ``theta``'s leading shape.

        Returns
        -------
        jax.Array
            NLE ``(num_samples, ..., *x_shape)``, NPE ``(num_samples, ..., d)``
            (no leading axis when ``num_samples`` is None).

        Notes
        -----
        An ensemble draws from the uniform mixture: each draw comes from a
        member chosen uniformly at random (every member draws, each draw keeps
        one member's value, so it costs ``members`` single draws).
        """
        if self.role == "ratio":
            raise TypeError("A ratio estimator cannot be sampled directly; use an MCMC sampler.")
        c = jnp.asarray(condition)
        if self.role == "likelihood":
            self._check_theta(c)
            cov = self._covariates(covariates)
            lead = (
                c.shape[:-1] if cov is None else jnp.broadcast_shapes(c.shape[:-1], cov.shape[:-1])
            )
            flat = self._context(c, cov, lead)
            event = self.x_shape
        else:
            lead = self._check_x(c)
            flat = flatten_x(c, len(self.x_shape))
            event = (self.spec.dim,)
        out_dtype = jnp.result_type(c.dtype, jnp.float32)
        flat = flat.astype(self.dtype)
        if num_samples is not None:
            flat = jnp.broadcast_to(flat, (int(num_samples), *flat.shape))
            lead = (int(num_samples), *lead)
        fn = _sample if self.members is None else _mixture_sample
        draws = fn(self.kind, self.module, self.params, self.standardization, rng_key, flat)
        return jnp.reshape(draws, (*lead, *event)).astype(out_dtype)

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Write the estimator to one ``.safetensors`` file (no pickle); see :func:`load`."""
        save(self, path)

    @classmethod
    def load(cls, path) -> Estimator:
        """Read an estimator written by :meth:`save`; never executes code from the file."""
        return load(path)

    def __repr__(self) -> str:
        n_params = sum(int(a.size) for a in jax.tree.leaves(self.params))
        ens = "" if self.members is None else f"members={self.members}, "
        written = ""
        if self.versions:
            written = ", written by " + " ".join(f"{k} {v}" for k, v in self.versions.items())
        return (
            f"Estimator(kind={self.kind!r}, {ens}network={type(self.module).__name__}, "
            f"params={n_params}, theta={list(self.spec.labels)}, x_shape={self.x_shape}, "
            f"dtype={self.dtype}{written})"
        )


# ---------------------------------------------------------------- files
# Format 1: a single estimator. Format 2 adds ensembles (``members`` in the
# metadata, a leading member axis on every parameter tensor). Single estimators
# are still written as version 1, so older pymc_sbi releases read them;
# ensembles are written as version 2, so older releases refuse them instead of
# misreading the stacked parameters.
FORMAT = "pymc_sbi.estimator"
VERSION = "1"
ENSEMBLE_VERSION = "2"
READABLE_VERSIONS = (VERSION, ENSEMBLE_VERSION)


def save(estimator: Estimator, path) -> None:
    """Write ``estimator`` to ``path`` (conventionally ``*.safetensors``).

    Tensors (network parameters, z-scoring statistics, training range) go into
    the safetensors buffers; everything else (kind, network family and
    hyper-parameters, parameter spec, history, config) into the JSON header.
    """
    groups = {
        "params": estimator.params,
        "standardization": estimator.standardization._asdict(),
    }
    if estimator.data_range is not None:  # training range, for out-of-range warnings
        groups["data_range"] = estimator.data_range._asdict()
    metadata = {
        "kind": estimator.kind,
        "network": json.dumps(network_config(estimator.module)),
        "spec": json.dumps(estimator.spec.to_dict()),
        "x_shape": json.dumps(list(estimator.x_shape)),
        "history": json.dumps(dict(estimator.history), default=float),
        "config": json.dumps(dict(estimator.config), default=str),
    }
    if estimator.members is not None:
        metadata["members"] = str(estimator.members)
    metadata["versions"] = json.dumps(library_versions())
    version = VERSION if estimator.members is None else ENSEMBLE_VERSION
    io.write(path, io.flatten(groups), metadata, format=FORMAT, version=version)


def load(path) -> Estimator:
    """Read an estimator written by :func:`save`; never executes code from the file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a valid safetensors file, or not a pymc_sbi estimator
        (foreign, corrupt or from an unsupported format version).
    """
    tensors, metadata = io.read(path, format=FORMAT, versions=READABLE_VERSIONS)
    try:
        tree = io.unflatten(tensors)
        std = Standardization(
            *(jnp.asarray(tree["standardization"][f]) for f in Standardization._fields)
        )
        data_range = None
        if "data_range" in tree:
            data_range = DataRange(*(np.asarray(tree["data_range"][f]) for f in DataRange._fields))
        members = metadata.get("members")
        members = None if members is None else int(members)
        module = network_from_config(json.loads(metadata["network"]))
        get_kind(metadata["kind"])  # a ValueError naming the known kinds
        check_params(path, metadata["kind"], module, std, tree["params"], members)
        return Estimator(
            kind=metadata["kind"],
            module=module,
            params=jax.tree.map(jnp.asarray, tree["params"]),
            standardization=std,
            spec=ParamSpec.from_dict(json.loads(metadata["spec"])),
            x_shape=tuple(json.loads(metadata["x_shape"])),
            history=json.loads(metadata.get("history", "{}")),
            config=json.loads(metadata.get("config", "{}")),
            data_range=data_range,
            members=members,
            versions=json.loads(metadata.get("versions", "{}")),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is a corrupt pymc_sbi estimator file: {err!r}") from err
