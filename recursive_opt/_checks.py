"""Input checks shared by optimisers, towers and the training drivers: each names
what is wrong and how to fix it."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_params(params: PyTree, who: str) -> None:
    bad = [
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if not (eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating))
    ]
    if bad:
        path, leaf = bad[0]
        what = getattr(leaf, "dtype", type(leaf).__name__)
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            # Adam would square instead of |g|^2, and a tuned learning rate
            # would turn complex through its hypergradient.
            raise TypeError(
                f"{who} optimises real arrays; the leaf at `params{path}` is "
                f"{what}. Optimise its real and imaginary parts as real arrays "
                "(e.g. a pair `(x.real, x.imag)` combined inside the loss)."
            )
        raise TypeError(
            f"{who} can only optimise floating-point arrays, but the leaf at "
            f"`params{path}` is {what}. Pass only the trainable arrays, e.g. "
            "`eqx.filter(model, eqx.is_inexact_array)` or `nnx.state(model, "
            "nnx.Param)`."
        )
    if not jax.tree.leaves(params):
        raise ValueError(
            f"{who} was given a parameter tree with no arrays to optimise."
        )


def check_same_structure(a: PyTree, b: PyTree, a_name: str, b_name: str) -> None:
    a_def, b_def = jax.tree.structure(a), jax.tree.structure(b)
    if a_def != b_def:
        raise ValueError(
            f"`{a_name}` and `{b_name}` must have the same pytree structure, got\n"
            f"  {a_name}: {a_def}\n  {b_name}: {b_def}"
        )
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True
    ):
        if x.shape != y.shape:
            raise ValueError(
                f"`{a_name}{jax.tree_util.keystr(path)}` has shape {x.shape} but "
                f"`{b_name}{jax.tree_util.keystr(path)}` has shape {y.shape}."
            )


def check_leaf_shapes(
    grads: PyTree, shapes: tuple[tuple[int, ...], ...], treedef=None
) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    if len(leaves) != len(shapes):
        raise ValueError(
            "`grads` and `params` must have the same pytree structure: the tower was "
            f"initialised with {len(shapes)} arrays, but `grads` has {len(leaves)}:\n"
            f"  grads: {jax.tree.structure(grads)}"
        )
    for i, ((path, g), shape) in enumerate(zip(leaves, shapes)):
        if g.shape != shape:
            message = (
                f"`grads{jax.tree_util.keystr(path)}` has shape {g.shape} but the "
                f"parameter it belongs to has shape {shape}."
            )
            g_def = jax.tree.structure(grads)
            if treedef is not None and g_def != treedef:
                # Leaves pair up in flattening order (dict keys sorted), so a tree
                # of another structure puts each gradient against another array.
                names = jax.tree_util.tree_leaves_with_path(
                    jax.tree.unflatten(treedef, range(len(shapes)))
                )
                where = jax.tree_util.keystr(names[i][0])
                message = (
                    f"`grads{jax.tree_util.keystr(path)}` has shape {g.shape}, but "
                    f"it is matched with `params{where}` of shape {shape}: `grads` "
                    "must have the structure of the parameters the tower was "
                    f"initialised with.\n  params: {treedef}\n  grads: {g_def}"
                )
            raise ValueError(message)
