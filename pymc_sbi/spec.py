"""The parameter specification: which named parameters make up ``theta``.

A neural estimator sees parameters as one flat vector ``theta`` of length
``d``. :class:`ParamSpec` records how that vector is assembled from named
model variables (in a fixed order, each flattened in C order), their shapes,
their PyMC ``dims`` and the support bounds of every element. It is plain data
(no PyMC import) so that it can be saved with an estimator as JSON; build one
from a model with :func:`pymc_sbi.prior.param_spec`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ParamSpec"]


def _finite_or_none(values: tuple[float, ...]) -> list[float | None]:
    return [None if not math.isfinite(v) else float(v) for v in values]


def _jsonable(value: Any) -> Any:
    """A coordinate value as a JSON primitive (numpy scalars unwrapped, others as str)."""
    if isinstance(value, np.generic):
        value = value.item()
    return value if isinstance(value, bool | int | float | str) else str(value)


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes, dims and bounds of the parameters in ``theta``.

    Parameters
    ----------
    names
        Variable names, in the order in which they are concatenated into ``theta``.
    shapes
        Shape of each variable (``()`` for a scalar).
    lower, upper
        Support bounds of every element of ``theta`` (length ``d``), ``-inf``/``inf``
        where unbounded.
    dims
        PyMC dimension names of each variable, or ``None`` where it has none.
    coords
        Coordinate values of the dims named in ``dims``.

    Notes
    -----
    ``theta = concat([ravel(v_1), ..., ravel(v_k)])``, so variable ``v_j`` occupies
    ``theta[offset_j : offset_j + prod(shape_j)]``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    dims: tuple[tuple[str, ...] | None, ...] = ()
    coords: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError("ParamSpec needs one shape per name.")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"ParamSpec names must be unique, got {self.names}.")
        if len(self.lower) != self.dim or len(self.upper) != self.dim:
            raise ValueError(f"ParamSpec bounds must have length d={self.dim}.")
        if not self.dims:
            object.__setattr__(self, "dims", (None,) * len(self.names))

    # ------------------------------------------------------------------ sizes
    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each variable."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Length ``d`` of the flat parameter vector."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def slices(self) -> dict[str, slice]:
        """Where each variable lives in ``theta``."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def labels(self) -> tuple[str, ...]:
        """One label per element of ``theta``, e.g. ``("mu", "theta[0]", "theta[1]")``."""
        labels = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            if shape == ():
                labels.append(name)
            else:
                labels.extend(f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape))
        return tuple(labels)

    # -------------------------------------------------------------- flatten
    def check_names(self, names: Mapping[str, Any] | tuple[str, ...]) -> None:
        """Raise a ``ValueError`` naming any missing or unknown variable."""
        given = set(names)
        missing = [n for n in self.names if n not in given]
        unknown = sorted(given - set(self.names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unknown:
                parts.append(f"unknown {unknown}")
            raise ValueError(
                f"Parameters do not match the estimator's parameters {list(self.names)}: "
                + "; ".join(parts)
                + "."
            )

    def check_matches(self, other: ParamSpec, what: str = "the model") -> None:
        """Raise a ``ValueError`` naming every variable whose name or shape differs.

        ``self`` is the estimator's (training) spec and ``other`` the spec of
        ``what`` (a prior or inference model), e.g. ``param_spec(model)``.
        """
        problems = []
        mine, theirs = (
            dict(zip(self.names, self.shapes, strict=True)),
            dict(zip(other.names, other.shapes, strict=True)),
        )
        for name, shape in mine.items():
            if name not in theirs:
                problems.append(f"{name!r} is missing from {what}")
            elif tuple(theirs[name]) != tuple(shape):
                problems.append(
                    f"{name!r} has shape {tuple(theirs[name])} in {what} but {tuple(shape)} "
                    "in training"
                )
        problems += [f"{what} has {n!r}, which the estimator does not know" for n in theirs
                     if n not in mine]  # fmt: skip
        if problems:
            raise ValueError(
                f"The estimator's parameters {list(self.labels)} do not match {what}: "
                + "; ".join(problems)
                + "."
            )

    def flatten(self, values: Mapping[str, Any], xp: Any = np) -> Any:
        """Concatenate named values into ``theta`` of shape ``(..., d)``.

        Each value must have shape ``(..., *shape)`` with the same leading batch
        shape; a mismatch raises a ``ValueError`` naming the variable.
        """
        self.check_names(values)
        parts, batch = [], None
        for name, shape in zip(self.names, self.shapes, strict=True):
            value = xp.asarray(values[name])
            n_core = len(shape)
            if tuple(value.shape[value.ndim - n_core :]) != tuple(shape) or value.ndim < n_core:
                raise ValueError(
                    f"Parameter {name!r} has shape {tuple(value.shape)}; expected (..., "
                    f"{', '.join(map(str, shape))}) i.e. trailing shape {shape}."
                )
            lead = tuple(value.shape[: value.ndim - n_core])
            if batch is None:
                batch = lead
            elif lead != batch:
                raise ValueError(
                    f"Parameter {name!r} has batch shape {lead}, but earlier parameters "
                    f"have {batch}."
                )
            parts.append(xp.reshape(value, (*lead, math.prod(shape))))
        return xp.concatenate(parts, axis=-1)

    def unflatten(self, theta: Any, xp: Any = np) -> dict[str, Any]:
        """Split ``theta`` of shape ``(..., d)`` back into named arrays."""
        theta = xp.asarray(theta)
        if theta.shape[-1] != self.dim:
            raise ValueError(f"theta has shape {theta.shape}; expected (..., {self.dim}).")
        lead = theta.shape[:-1]
        return {
            name: xp.reshape(theta[..., sl], (*lead, *shape))
            for (name, sl), shape in zip(self.slices.items(), self.shapes, strict=True)
        }

    def in_support(self, theta: Any) -> np.ndarray:
        """Boolean mask ``(...)``: every element of ``theta`` inside its bounds."""
        theta = np.asarray(theta)
        return np.all((theta >= np.asarray(self.lower)) & (theta <= np.asarray(self.upper)), -1)

    # ---------------------------------------------------------- serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (infinite bounds become ``None``)."""
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "lower": _finite_or_none(self.lower),
            "upper": _finite_or_none(self.upper),
            "dims": [None if d is None else list(d) for d in self.dims],
            "coords": [[k, [_jsonable(c) for c in v]] for k, v in self.coords],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            names=tuple(data["names"]),
            shapes=tuple(tuple(int(i) for i in s) for s in data["shapes"]),
            lower=tuple(-math.inf if v is None else float(v) for v in data["lower"]),
            upper=tuple(math.inf if v is None else float(v) for v in data["upper"]),
            dims=tuple(None if d is None else tuple(d) for d in data.get("dims", [])),
            coords=tuple((k, tuple(v)) for k, v in data.get("coords", [])),
        )
