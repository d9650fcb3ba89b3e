"""What `fit` and `sweep` train: a pytree of arrays, an Equinox module or a Flax NNX
module, split into the arrays an optimiser updates and everything else."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PyTree


def _is_nnx(model: Any) -> bool:
    # Flax is optional: only look for it if the model could be one of its modules.
    if "flax" not in type(model).__module__ and not any(
        "flax" in c.__module__ for c in type(model).__mro__
    ):
        return False
    from flax import nnx

    return isinstance(model, nnx.Module)


def _loss_and_aux(out: Any, has_aux: bool) -> tuple[Any, Any]:
    """`loss_fn`'s output as `(loss, aux)`, with what was wrong said in its terms."""
    if has_aux:
        if not (isinstance(out, tuple | list) and len(out) == 2):
            what = (
                f"a {type(out).__name__} of {len(out)}"
                if isinstance(out, tuple | list)
                else "one value"
            )
            raise TypeError(
                f"With has_aux=True, loss_fn must return a pair (loss, aux); it "
                f"returned {what}."
            )
        loss, aux = out
    elif isinstance(out, tuple | list):
        raise TypeError(
            f"loss_fn returned a {type(out).__name__} of {len(out)}; it must return "
            "a scalar loss, or (loss, aux) with has_aux=True."
        )
    else:
        loss, aux = out, None
    if jnp.shape(loss) != ():
        raise TypeError(
            f"loss_fn must return a scalar loss; it returned shape "
            f"{jnp.shape(loss)} (average it, e.g. with jnp.mean)."
        )
    return loss, aux


class Skeleton(eqx.Module):
    """A model without its arrays: what rebuilding it and taking its loss's
    gradient need (traced code holds this, the arrays travel in the carry). For
    an Equinox model or pytree the non-trained part (its integer arrays, if any,
    are leaves a jitted caller passes as arguments); for Flax NNX the graphdef."""

    nnx: bool = eqx.field(static=True)
    structure: Any

    def rebuild(self, params: PyTree, rest: PyTree) -> Any:
        if self.nnx:
            from flax import nnx

            # Fresh variables, made in the caller's trace: `rest` may hold ones
            # made outside it (a scheme's linearisation, a line search), which a
            # batch statistic's write, or NNX's own transforms, then refuse.
            params, rest = jax.tree.map(lambda x: x, (params, rest))
            return nnx.merge(self.structure, params, rest)
        return eqx.combine(params, self.structure)

    def value(
        self, loss_fn: Callable, has_aux: bool, params: PyTree, rest: PyTree, batch
    ) -> Any:
        """The loss of `loss_fn(model, batch)` at `params` (what a line search
        evaluates; a Flax NNX model's updated state is not kept)."""
        return _loss_and_aux(loss_fn(self.rebuild(params, rest), batch), has_aux)[0]

    def value_and_grad(
        self, loss_fn: Callable, has_aux: bool, params: PyTree, rest: PyTree, batch
    ) -> tuple[Any, Any, PyTree, PyTree]:
        """`(loss, aux, grads, new_rest)` of `loss_fn(model, batch)`."""

        def objective(model):
            return _loss_and_aux(loss_fn(model, batch), has_aux)

        if not self.nnx:
            (loss, aux), grads = jax.value_and_grad(
                lambda p: objective(self.rebuild(p, rest)), has_aux=True
            )(params)
            return loss, aux, grads, rest
        from flax import nnx

        model = self.rebuild(params, rest)
        (loss, aux), grads = nnx.value_and_grad(objective, has_aux=True)(model)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, aux, grads, new_rest


class Model:
    """A model split into `params` (trained), `rest` (carried along) and its
    `skeleton` (what rebuilds it and takes the loss's value and gradient).

    - Plain pytrees and Equinox modules: the floating-point arrays are trained;
        everything else (integer arrays, functions, static fields) is kept as it is.
    - Flax NNX modules: the `nnx.Param` variables are trained; the other state
        (batch statistics, RNG streams) is `rest`, carried from step to step as the
        module updates it in the loss.
    """

    def __init__(self, model: Any):
        if _is_nnx(model):
            from flax import nnx

            graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
            self.skeleton = Skeleton(True, graphdef)
        else:
            self.params, static = eqx.partition(model, eqx.is_inexact_array)
            self.rest = None
            self.skeleton = Skeleton(False, static)

    def rebuild(self, params: PyTree, rest: PyTree) -> Any:
        return self.skeleton.rebuild(params, rest)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def select(pred, on_true: PyTree, on_false: PyTree) -> PyTree:
    """`jnp.where(pred, on_true, on_false)` leaf by leaf, PRNG keys included."""

    def one(a, b):
        if _is_key(a):
            data = jnp.where(pred, jr.key_data(a), jr.key_data(b))
            return jr.wrap_key_data(data, impl=jr.key_impl(a))
        return jnp.where(pred, a, b)

    return jax.tree.map(one, on_true, on_false)


def keys_to_data(tree: PyTree) -> PyTree:
    """Typed PRNG keys as their raw uint32 data (for serialisation and hashing)."""
    return jax.tree.map(lambda x: jr.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: PyTree, like: PyTree) -> PyTree:
    """Inverse of `keys_to_data`, with `like` telling which leaves were keys."""
    return jax.tree.map(
        lambda x, t: jr.wrap_key_data(x, impl=jr.key_impl(t)) if _is_key(t) else x,
        tree,
        like,
    )


def copy_arrays(tree: PyTree) -> PyTree:
    """A copy of every JAX array in `tree` (so donating it leaves the original)."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)
