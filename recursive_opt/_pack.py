"""Packing a tower's state into a few arrays, for cheap dispatch under `jax.jit`.

A tower's state is a tree of Equinox modules holding dozens of small arrays (raw
hyperparameters, step counters, the upper levels' moments and Jacobians). Each
array and each module node of a jitted function's arguments and results costs
microseconds of dispatch per call: for a small model, as much as its whole step.
So the state keeps its tree structure statically, the arrays of at most `SMALL`
elements in one flat vector per dtype, and the others in a tuple.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

SMALL = 1024


class Packed(eqx.Module):
    """A pytree stored as flat vectors (small leaves, one per dtype) plus the rest."""

    flats: tuple[Array, ...]  # one per dtype in `dtypes`
    big: tuple[Array, ...]  # the other leaves, in order
    treedef: Any = eqx.field(static=True)
    # Per leaf: (index into `flats`, or -1 for `big`; start; shape).
    layout: tuple[tuple[int, int, tuple[int, ...]], ...] = eqx.field(static=True)


def pack(tree: PyTree[Array]) -> Packed:
    leaves, treedef = jax.tree.flatten(tree)
    dtypes = sorted({str(x.dtype) for x in leaves if x.size <= SMALL})
    pieces: list[list[Array]] = [[] for _ in dtypes]
    offsets = [0] * len(dtypes)
    big, layout = [], []
    for x in leaves:
        if x.size <= SMALL:
            g = dtypes.index(str(x.dtype))
            layout.append((g, offsets[g], tuple(x.shape)))
            pieces[g].append(jnp.ravel(x))
            offsets[g] += x.size
        else:
            layout.append((-1, len(big), tuple(x.shape)))
            big.append(x)
    flats = tuple(jnp.concatenate(p) for p in pieces)
    return Packed(flats, tuple(big), treedef, tuple(layout))


def unpack(packed: Packed) -> PyTree[Array]:
    """The packed tree; leading (batch) axes of the flat vectors are kept."""
    leaves = []
    for g, start, shape in packed.layout:
        if g < 0:
            leaves.append(packed.big[start])
        else:
            flat = packed.flats[g]
            size = int(np.prod(shape, dtype=int))
            piece = flat[..., start : start + size]
            leaves.append(piece.reshape(flat.shape[:-1] + shape))
    return jax.tree.unflatten(packed.treedef, leaves)
