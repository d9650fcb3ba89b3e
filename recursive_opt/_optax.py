"""Interop with optax: a tower or optimiser as a `GradientTransformation`."""

from typing import Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PyTree

apply_updates = optax.apply_updates


def tree_dot(a: PyTree, b: PyTree, dtype=jnp.float32) -> Array:
    """The sum over two trees' leaves of their elementwise products, in `dtype`:
    a reduction XLA fuses with what makes its inputs (`jnp.vdot` is a dot, which
    XLA:CPU does not fuse)."""
    products = jax.tree.map(
        lambda x, y: jnp.sum(x.astype(dtype) * y.astype(dtype)), a, b
    )
    return sum(jax.tree.leaves(products), jnp.zeros((), dtype))


class _HasInitUpdate(Protocol):
    def init(self, params): ...
    def update(self, grads, state, params=None): ...


def as_optax(
    obj: _HasInitUpdate, extra_args: bool = False
) -> optax.GradientTransformation:
    """Wrap `obj.init`/`obj.update` as an optax transformation; with `extra_args`,
    a `GradientTransformationExtraArgs` whose `update` passes keyword arguments
    (optax's `value=loss`, ...) on to `obj.update`.

    Plain closures, not bound methods: a bound method of an `eqx.Module` is a
    pytree holding the module's arrays, which Flax NNX refuses to keep as a static
    attribute of `nnx.Optimizer`.
    """

    def init_fn(params):
        return obj.init(params)

    if extra_args:

        def update_with(updates, state, params=None, **extra):
            return obj.update(updates, state, params, **extra)

        return optax.GradientTransformationExtraArgs(init_fn, update_with)

    def update_fn(updates, state, params=None):
        return obj.update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


def unaliased(tree: PyTree, others: PyTree = None) -> PyTree:
    """`tree` with a copy of each array leaf that is the same array as an earlier
    leaf or as one of `others` (the rest kept as they are): such a tree can be
    donated beside `others` at no more memory than it holds."""
    seen = {id(x) for x in jax.tree.leaves(others) if eqx.is_array(x)}

    def one(x):
        if not eqx.is_array(x):
            return x
        if id(x) in seen:
            return jnp.array(x, copy=True)
        seen.add(id(x))
        return x

    return jax.tree.map(one, tree)


def distinct_buffers(tree: PyTree) -> PyTree:
    """Copy every array leaf, so that no two leaves (nor a leaf and the caller's
    parameters) share a buffer: such a state can be donated to a jitted step."""
    return jax.tree.map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )
