"""PyTensor Ops around JAX functions of trained estimators.

:func:`jax_op` turns a JAX function ``f(*arrays) -> array`` into a PyTensor
``JAXOp`` (the Op behind :func:`pytensor.wrap_jax`): the C/numba backends call
the jitted function, the JAX backends (numpyro, nutpie with ``backend="jax"``,
``pm.sample(..., compile_kwargs={"mode": "JAX"})``) inline it, and gradients are
JAX vector-Jacobian products.

Two departures from a plain ``wrap_jax``:

* **Fork safety.** JAX's runtime is multithreaded and does not survive
  ``fork``: PyMC's default multiprocess sampler (``nuts_sampler="pymc"``,
  ``cores > 1`` on Linux) would deadlock in the child. Our Op notices that it
  runs in a forked child and raises a ``RuntimeError`` that says what to do
  instead of hanging.
* **dtypes.** The Op's interface is PyMC's ``floatX`` (float64 by default)
  whatever the network computes in; x64 is enabled in JAX before an Op is
  built (as PyTensor's JAX backend does on import), so float64 inputs stay
  float64 at the interface.
"""

from __future__ import annotations

import os
import warnings

import jax
import pytensor
from pytensor.gradient import DisconnectedType
from pytensor.link.jax.ops import JAXOp
from pytensor.tensor.type import TensorType, discrete_dtypes

__all__ = ["ForkSafeJAXOp", "enable_x64_for_pytensor", "jax_op"]

_IN_FORKED_CHILD = False


def _mark_forked_child() -> None:
    global _IN_FORKED_CHILD
    _IN_FORKED_CHILD = True


os.register_at_fork(after_in_child=_mark_forked_child)

FORK_MESSAGE = (
    "A pymc_sbi neural term was evaluated in a process created with fork(), where JAX "
    "deadlocks. Use pm.sample(..., mp_ctx='forkserver') or mp_ctx='spawn', or cores=1, or a "
    "sampler that does not fork: nuts_sampler='nutpie' (pm.sample's default when nutpie is "
    "installed) or nuts_sampler='numpyro'."
)


def enable_x64_for_pytensor() -> None:
    """Match JAX's x64 flag to PyTensor's ``floatX`` (what PyTensor's JAX backend does)."""
    jax.config.update("jax_enable_x64", pytensor.config.floatX == "float64")


class ForkSafeJAXOp(JAXOp):
    """A ``JAXOp`` that refuses to run in a forked child and whose gradient Op is one too."""

    def perform(self, node, inputs, outputs):
        """Evaluate the JAX function (refused in a forked worker, where JAX deadlocks)."""
        if _IN_FORKED_CHILD:
            raise RuntimeError(FORK_MESSAGE)
        super().perform(node, inputs, outputs)

    def pullback(self, inputs, outputs, output_gradients):
        """Vector-Jacobian product for the connected outputs only."""
        connected = [
            i for i, g in enumerate(output_gradients) if not isinstance(g.type, DisconnectedType)
        ]
        wrt = [i for i, t in enumerate(self.input_types) if t.dtype not in discrete_dtypes]
        if not connected or not wrt:
            return [DisconnectedType()() for _ in inputs]
        n_in = len(inputs)
        func = self.jax_func
        out_dtypes = [self.output_types[i].dtype for i in connected]

        def vjp(*args):
            values, cotangents = list(args[:n_in]), args[n_in:]

            def restricted(*diff_values):
                full = list(values)
                for i, v in zip(wrt, diff_values, strict=True):
                    full[i] = v
                outs = func(*full)
                return [outs[i].astype(dt) for i, dt in zip(connected, out_dtypes, strict=True)]

            _, pull = jax.vjp(restricted, *(values[i] for i in wrt))
            grads = pull([c.astype(dt) for c, dt in zip(cotangents, out_dtypes, strict=True)])
            return tuple(
                g.astype(self.input_types[i].dtype) for i, g in zip(wrt, grads, strict=True)
            )

        # One VJP Op per (forward Op, connected outputs): PyMC differentiates once per
        # value variable, and equal Op instances on equal inputs merge into one call.
        cache = self.__dict__.setdefault("_vjp_ops", {})
        key = tuple(connected)
        if key not in cache:
            cache[key] = ForkSafeJAXOp(
                [*self.input_types, *(self.output_types[i] for i in connected)],
                [self.input_types[i] for i in wrt],
                vjp,
                name=f"vjp_{self.name}",
            )
        vjp_op = cache[key]
        grads = vjp_op(*inputs, *(output_gradients[i] for i in connected), return_list=True)
        result = [DisconnectedType()() for _ in inputs]
        for i, g in zip(wrt, grads, strict=True):
            result[i] = g
        return result


def jax_op(fn, input_types, output_type: TensorType, name: str) -> ForkSafeJAXOp:
    """Wrap ``fn(*arrays) -> array`` (one output) into a :class:`ForkSafeJAXOp`."""

    def wrapped(*args):
        return (fn(*args).astype(output_type.dtype),)

    return ForkSafeJAXOp(list(input_types), [output_type], wrapped, name=name)


def _register_numba_fallback() -> None:
    """Run our Ops in numba object mode without PyTensor's generic warning.

    Object mode is the designed path for a JAX call from a numba-compiled graph
    (nutpie's default backend); warning about it on every model only adds noise.
    For the fast path use a JAX backend (see the docs' sampler guide).
    """
    from pytensor.link.numba.dispatch.basic import generate_fallback_impl, numba_funcify

    @numba_funcify.register(ForkSafeJAXOp)
    def _funcify(op, node=None, storage_map=None, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Numba will use object mode")
            return generate_fallback_impl(op, node, storage_map, **kwargs)


_register_numba_fallback()
