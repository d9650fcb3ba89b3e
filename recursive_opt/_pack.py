"""Packing a tower's state into a few arrays, for cheap dispatch under `jax.jit`.

A tower's state is a tree of Equinox modules holding dozens of small arrays (raw
hyperparameters, step counters, the upper levels' moments and Jacobians). Each
array and each module node of a jitted function's arguments and results costs
microseconds of dispatch per call: for a small model, as much as its whole step.
So the state keeps its tree structure statically, the arrays of at most `SMALL`
elements in one flat vector per float dtype, and the others in a tuple. Integer
and boolean arrays (step counters) are kept in the float32 (else float64) vector
as exact 16-bit pieces: one vector fewer to read and write per step, and every
leaf of a state a float, which a finiteness check reads.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

SMALL = 1024


class Packed(eqx.Module):
    """A pytree stored as flat vectors (small leaves) plus the rest."""

    # One per dtype; integers and booleans in the float32 (else float64) one.
    flats: tuple[Array, ...]
    big: tuple[Array, ...]  # the other leaves, in order
    treedef: Any = eqx.field(static=True)
    # Per leaf: (index into `flats`, or -1 for `big`; start; shape; its dtype).
    layout: tuple[tuple[int, int, tuple[int, ...], str], ...] = eqx.field(static=True)


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
        apart = [g < 0 for g, *_ in like.layout]
    else:
        apart = [x.size > SMALL or _split_across_devices(x) for x in leaves]
    carrier = _carrier([x.dtype for x, a in zip(leaves, apart) if not a])
    kinds = [None if a else _kind(x.dtype, carrier) for x, a in zip(leaves, apart)]
    dtypes = sorted({str(k) for k in kinds if k is not None})
    pieces: list[list[Array]] = [[] for _ in dtypes]
    offsets = [0] * len(dtypes)
    big, layout = [], []
    for x, kind in zip(leaves, kinds):
        if kind is not None:
            g = dtypes.index(str(kind))
            layout.append((g, offsets[g], tuple(x.shape), str(x.dtype)))
            piece = encode(x, kind)
            pieces[g].append(jnp.ravel(piece))
            offsets[g] += piece.size
        else:
            layout.append((-1, len(big), tuple(x.shape), str(x.dtype)))
            big.append(x)
    flats = tuple(jnp.concatenate(p) for p in pieces)
    return Packed(flats, tuple(big), treedef, tuple(layout))


def unpack(packed: Packed) -> PyTree[Array]:
    """The packed tree; leading (batch) axes of the flat vectors are kept."""
    leaves = []
    for g, start, shape, dtype in packed.layout:
        if g < 0:
            leaves.append(packed.big[start])
        else:
            flat = packed.flats[g]
            shape = shape + _piece_axis(flat.dtype, dtype)
            size = int(np.prod(shape, dtype=int))
            piece = flat[..., start : start + size]
            leaves.append(decode(piece.reshape(flat.shape[:-1] + shape), dtype))
    return jax.tree.unflatten(packed.treedef, leaves)


def _carrier(dtypes) -> Any:
    """The float dtype among `dtypes` that holds 16-bit integers exactly (float32
    first), or None."""
    for d in (jnp.float32, jnp.float64):
        if any(dtype == d for dtype in dtypes):
            return jnp.dtype(d)
    return None


def _kind(dtype, carrier) -> Any:
    """The dtype of the vector an array of `dtype` is packed into."""
    if carrier is None or jnp.issubdtype(dtype, jnp.inexact):
        return jnp.dtype(dtype)
    return carrier


def _piece_axis(kind, dtype) -> tuple[int, ...]:
    """The last axis `encode` adds to an array of `dtype` kept in a `kind` vector."""
    dtype = jnp.dtype(dtype)
    if dtype == kind:
        return ()
    return (max(1, dtype.itemsize // 2),)


def encode(x, kind):
    """`x` as `kind`: itself if it has that dtype, else (an integer or boolean
    array) its bits in 16-bit pieces along a new last axis, as exact values."""
    if x.dtype == kind:
        return x
    if x.dtype == jnp.bool_:
        return x.astype(kind)[..., None]
    bits = 8 * x.dtype.itemsize
    u = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}"))
    shifts = range(0, bits, 16)
    return jnp.stack([((u >> s) & 0xFFFF).astype(kind) for s in shifts], axis=-1)


def decode(p, dtype):
    """The array of `dtype` that `encode` made `p` from."""
    dtype = jnp.dtype(dtype)
    if p.dtype == dtype:
        return p
    if dtype == jnp.bool_:
        return p[..., 0] != 0
    udtype = jnp.dtype(f"uint{8 * dtype.itemsize}")
    u = sum(p[..., k].astype(udtype) << (16 * k) for k in range(p.shape[-1]))
    return jax.lax.bitcast_convert_type(u.astype(udtype), dtype)
