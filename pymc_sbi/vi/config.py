r"""How to fit a variational family, configured once: :class:`VIConfig`.

:func:`~pymc_sbi.fit_vi` and :func:`~pymc_sbi.vi.train_amortized` take one
frozen :class:`VIConfig` instead of twenty keyword arguments, as
:func:`~pymc_sbi.fit` takes a :class:`~pymc_sbi.TrainConfig`.
:func:`amortized_recipe` holds the settings that suit amortised VI (few
particles per observation, many steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optax

from pymc_sbi.vi.divergences import DIVERGENCES

__all__ = ["VIConfig", "amortized_recipe"]


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"VIConfig: {name} must be an integer >= {minimum}, got {value!r}.")


@dataclass(frozen=True)
class VIConfig:
    r"""A variational-inference setup: family, divergence, optimiser and stopping.

    Parameters
    ----------
    family
        ``"gaussian_diag"``, ``"gaussian"``, ``"maf"`` or ``"nsf"`` (see
        :mod:`pymc_sbi.vi.families`), or a :class:`~pymc_sbi.vi.Family`.
    divergence
        ``"rkl"`` (ELBO), ``"fkl"`` (forward KL by self-normalised importance
        sampling), ``"iw"`` (importance-weighted bound, ``K`` draws per group) or
        ``"alpha"`` (Rényi, order ``alpha``); see :mod:`pymc_sbi.vi.divergences`.
    num_particles
        Monte-Carlo draws per step (groups of ``K`` for ``iw``/``alpha``; per
        observation in amortised VI).
    learning_rate, lr_decay
        Adam's learning rate :math:`\eta_0`, multiplied by ``lr_decay``
        (:math:`\gamma`) after every step: :math:`\eta_t = \eta_0 \gamma^t`.
    max_iters, min_iters
        Step budget; the convergence check starts after ``min_iters`` steps.
    clip_norm
        Global gradient-norm clipping (``None``: off).
    stl
        Sticking-the-landing gradient (``rkl`` only).
    K, alpha
        Options of ``iw`` and ``alpha``.
    warmup_from_prior, warmup_draws
        Start from the moments of ``warmup_draws`` prior draws in the
        unconstrained space (off: standard normal).
    check_convergence, chunk_size
        Stop once the chunk-mean loss stops improving
        (:mod:`pymc_sbi.vi.core`); steps run in compiled chunks of ``chunk_size``.
    optimizer
        An optax optimizer replacing Adam (clipping still applies).
    flow_kwargs
        Network options of ``maf``/``nsf``, e.g. ``{"num_transforms": 3}``.
    pretrain_iters, pretrain_learning_rate
        Flow families: at most ``pretrain_iters`` steps fitting the outer affine
        alone (the full-rank Gaussian) before the flow; ``None``: 500 under
        ``fkl``/``iw``/``alpha``, 0 under ``rkl``.

    Examples
    --------
    >>> post = ps.fit_vi(model, ps.vi.VIConfig(family="nsf", divergence="fkl"))  # doctest: +SKIP
    """

    family: Any = "maf"
    divergence: str = "rkl"
    num_particles: int = 128
    learning_rate: float = 1e-3
    lr_decay: float = 1.0
    max_iters: int = 2000
    min_iters: int = 200
    clip_norm: float | None = 10.0
    stl: bool = False
    K: int = 8
    alpha: float = 0.5
    warmup_from_prior: bool = True
    warmup_draws: int = 1000
    check_convergence: bool = True
    chunk_size: int = 100
    optimizer: optax.GradientTransformation | None = field(default=None, compare=False)
    flow_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrain_iters: int | None = None
    pretrain_learning_rate: float = 1e-2

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"VIConfig: divergence must be one of {DIVERGENCES}, got {self.divergence!r}."
            )
        if self.stl and self.divergence != "rkl":
            raise ValueError(
                f"VIConfig: stl applies to divergence='rkl' only, not {self.divergence!r}."
            )
        for name in ("num_particles", "max_iters", "chunk_size", "K", "warmup_draws"):
            _positive_int(name, getattr(self, name))
        _positive_int("min_iters", self.min_iters, 0)
        if self.pretrain_iters is not None:
            _positive_int("pretrain_iters", self.pretrain_iters, 0)
        for name in ("learning_rate", "pretrain_learning_rate", "lr_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"VIConfig: {name} must be > 0, got {value!r}.")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"VIConfig: clip_norm must be None or > 0, got {self.clip_norm!r}.")
        object.__setattr__(self, "flow_kwargs", dict(self.flow_kwargs or {}))

    @property
    def family_name(self) -> str:
        """The family's name (``family`` itself, or its ``name`` for a Family object)."""
        return getattr(self.family, "name", self.family)

    @property
    def pretrain_steps(self) -> int:
        """``pretrain_iters``, with its divergence-dependent default resolved."""
        if self.pretrain_iters is not None:
            return int(self.pretrain_iters)
        return 0 if self.divergence == "rkl" else 500

    def replace(self, **changes: Any) -> VIConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields, for a posterior's ``config`` record."""
        out = {k: v for k, v in asdict(self).items() if k not in ("optimizer", "family")}
        out["family"] = self.family_name
        out["custom_optimizer"] = self.optimizer is not None
        return out


def amortized_recipe(**changes: Any) -> VIConfig:
    """The defaults of amortised VI: 8 particles per observation, 1,000-5,000 steps."""
    return VIConfig(**{"num_particles": 8, "max_iters": 5000, "min_iters": 1000, **changes})
