"""The divergence guard: finiteness checks and bounds on hyperparameters."""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from ._hyper import TRANSFORMS, hyper_fields
from ._pack import pack
from ._stack import TowerState

Bounds = dict[str, tuple[float | None, float | None]]


class DivergenceError(FloatingPointError):
    """Training met a non-finite loss, gradient or update with `on_nonfinite="stop"`.

    `step` is the step that failed (0-based) and `result` holds the parameters,
    state and history as they were before it.
    """

    def __init__(self, message: str, step: int, result=None):
        super().__init__(message)
        self.step = step
        self.result = result


def all_finite(tree: PyTree) -> Bool[Array, ""]:
    """Whether every floating-point leaf of `tree` is finite (True for no leaves)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if eqx.is_inexact_array(x)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _check_pair(name: str, pair) -> tuple[float | None, float | None]:
    if not (isinstance(pair, Sequence) and len(pair) == 2):
        raise ValueError(
            f"bounds[{name!r}] must be a pair (low, high), got {pair!r}; use None "
            "for no bound on one side."
        )
    lo, hi = (None if b is None else float(b) for b in pair)
    for b in (lo, hi):
        if b is not None and not math.isfinite(b):
            raise ValueError(f"bounds[{name!r}] must be finite numbers, got {pair!r}.")
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"bounds[{name!r}] needs low < high, got {pair!r}.")
    return lo, hi


def normalise_bounds(bounds, state) -> list[Bounds] | None:
    """One `name -> (low, high)` dict per set of hyperparameters in `state`.

    `bounds` is a dict applied to every level, or (untied towers) a list with one
    dict (or None) per level, bottom first.
    """
    if bounds is None:
        return None
    if not isinstance(state, TowerState):
        raise ValueError(
            "bounds need a recursive_opt optimiser or tower; this optimiser's "
            "hyperparameters are not visible to the guard."
        )
    opts = state.opts
    if isinstance(bounds, Mapping):
        per_level = [dict(bounds)] * len(opts)
    elif isinstance(bounds, Sequence) and not isinstance(bounds, str):
        if state.tied or len(bounds) != len(opts):
            raise ValueError(
                f"bounds as a list needs one entry per level ({state.depth}) of an "
                "untied tower; for a tied tower, or the same bounds everywhere, pass "
                "a dict."
            )
        per_level = [dict(b or {}) for b in bounds]
    else:
        raise ValueError(f"bounds must be a dict or a list of dicts, got {bounds!r}.")
    known = {n for o in opts for n in hyper_fields(o)}
    out = []
    for level in per_level:
        for name in level:
            if name not in known:
                raise ValueError(
                    f"bounds name {name!r} is not a hyperparameter of this tower; "
                    f"its hyperparameters are {sorted(known)}."
                )
        out.append({n: _check_pair(n, p) for n, p in level.items()})
    return out


def _clip_raw(raw: Array, transform: str, lo, hi) -> Array:
    t = TRANSFORMS[transform]
    value = t.forward(raw)
    if lo is not None:
        raw = jnp.where(value < lo, t.inverse(jnp.asarray(lo, raw.dtype)), raw)
    if hi is not None:
        raw = jnp.where(value > hi, t.inverse(jnp.asarray(hi, raw.dtype)), raw)
    return raw


def clamp(state: TowerState, bounds: list[Bounds]) -> TowerState:
    """`state` with every bounded hyperparameter moved into its range.

    The raw value is replaced by the inverse transform of the violated bound, so the
    optimiser reads exactly the bound.
    """
    contents = state.contents
    opts = list(contents.opts)
    for k, level in enumerate(bounds):
        fields = hyper_fields(opts[k])
        for name, (lo, hi) in level.items():
            if name not in fields:
                continue
            h = fields[name]
            raw = jax.tree.map(lambda r: _clip_raw(r, h.transform, lo, hi), h.raw)
            opts[k] = eqx.tree_at(lambda o: getattr(o, name).raw, opts[k], raw)
    contents = dataclasses.replace(contents, opts=tuple(opts))
    return dataclasses.replace(state, packed=pack(contents))
