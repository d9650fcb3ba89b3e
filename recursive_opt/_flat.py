"""Upper levels step the values below them as flat vectors.

A level above level 1 optimises the tuned raw values of the level below it. With
one learning rate per layer (the default over an adaptive rule) those are one
scalar per leaf of the model, so a level stepping them leaf by leaf traces its
whole rule once per leaf: for a 12-block transformer (75 leaves) the default
depth-3 step was 22 000 jaxpr equations against optax Adam's 3 500, and 10x its
compile time, growing with the leaf count.

An elementwise rule (`AbstractElementwiseOptimiser`) whose own hyperparameters
are one value each (`per="tree"`: every default upper level) computes coordinate
i of its update from coordinate i alone, so it may step all those scalars as one
vector per dtype: the same arithmetic per value, in a program that does not grow
with the model. Its state, and the record the chain reads, are then laid out
over those vectors. Levels of any other kind, or over values that are not
scalars (`per="element"` below: parameter-sized arrays, which a concatenation
would copy every step), keep the tree.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._hyper import hyper_fields
from ._optimiser import AbstractElementwiseOptimiser

# Tests set it to False to run the leaf-by-leaf path the vectors replace.
_ENABLED = True


def flattens(opt: Any, below: PyTree[Array]) -> bool:
    """Whether level `opt` steps `below` (the tuned raw values of the level under
    it) as flat vectors: an elementwise rule with one value per hyperparameter,
    over at least two values, every one a scalar."""
    if not _ENABLED or not isinstance(opt, AbstractElementwiseOptimiser):
        return False
    if any(h.per != "tree" for h in hyper_fields(opt).values()):
        return False
    leaves = jax.tree.leaves(below)
    return len(leaves) > 1 and all(jnp.ndim(x) == 0 for x in leaves)


def _dtypes(leaves) -> list:
    """The leaves' dtypes in order of first appearance: one vector each."""
    out: list = []
    for x in leaves:
        if jnp.result_type(x) not in out:
            out.append(jnp.result_type(x))
    return out


def to_flat(tree: PyTree[Array], like: PyTree[Array]) -> tuple[Array, ...]:
    """`tree`'s scalars as one vector per dtype of `like`'s leaves (the same
    structure), each leaf cast to its counterpart's dtype."""
    like_leaves, treedef = jax.tree.flatten(like)
    leaves = treedef.flatten_up_to(tree)
    kinds = [jnp.result_type(x) for x in like_leaves]
    return tuple(
        jnp.stack([jnp.asarray(x, d) for x, k in zip(leaves, kinds) if k == d])
        for d in _dtypes(like_leaves)
    )


def from_flat(flat: tuple[Array, ...], like: PyTree[Array]) -> PyTree[Array]:
    """The tree of `like`'s structure whose scalars `to_flat` laid out as `flat`."""
    leaves, treedef = jax.tree.flatten(like)
    dtypes = _dtypes(leaves)
    taken = [0] * len(dtypes)
    out = []
    for x in leaves:
        i = dtypes.index(jnp.result_type(x))
        out.append(flat[i][taken[i]])
        taken[i] += 1
    return jax.tree.unflatten(treedef, out)
