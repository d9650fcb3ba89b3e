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


def _split_across_devices(x) -> bool:
    """Whether `x` is a concrete array laid out in pieces over several devices."""
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return False
    sharding = x.sharding
    return len(sharding.device_set) > 1 and not sharding.is_fully_replicated


def pack(tree: PyTree[Array], like: Packed | None = None) -> Packed:
    """`tree` packed. A leaf stays apart (in `big`) if it has more than `SMALL`
    elements, or if it is split across devices (a sharded model's small arrays
    and their moments: in one flat vector with replicated scalars they would
    make that vector sharded, and every step would move its pieces between
    devices), or if it stayed apart in `like` (the same tree's earlier packing:
    under `jax.jit` a leaf's sharding is not known, and the layout must not
    change from step to step)."""
    leaves, treedef = jax.tree.flatten(tree)
    if like is not None and like.treedef == treedef:
        apart = [g < 0 for g, _, _ in like.layout]
    else:
        apart = [x.size > SMALL or _split_across_devices(x) for x in leaves]
    dtypes = sorted({str(x.dtype) for x, a in zip(leaves, apart) if not a})
    pieces: list[list[Array]] = [[] for _ in dtypes]
    offsets = [0] * len(dtypes)
    big, layout = [], []
    for x, a in zip(leaves, apart):
        if not a:
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
