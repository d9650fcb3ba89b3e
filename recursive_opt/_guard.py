"""The divergence guard: finiteness checks and bounds on hyperparameters."""

from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from ._hyper import Bounds, check_bounds, hyper_fields, with_bounds
from ._stack import Stack


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


def normalise_bounds(bounds, tower) -> list[dict[str, Bounds]] | None:
    """One `name -> (low, high)` dict per set of hyperparameters of `tower` (one
    per level, or one for a tied tower).

    `bounds` is a dict applied to every level, or (untied towers) a list with one
    dict (or None) per level, bottom first. The tower enforces them (`bound`).
    """
    if bounds is None:
        return None
    if not isinstance(tower, Stack):
        raise ValueError(
            "bounds need a recursive_opt optimiser or tower; this optimiser's "
            "hyperparameters are not visible to the guard."
        )
    opts = tower.levels[:1] if tower.tie else tower.levels
    if isinstance(bounds, Mapping):
        per_level = [dict(bounds)] * len(opts)
    elif isinstance(bounds, Sequence) and not isinstance(bounds, str):
        if tower.tie or len(bounds) != len(opts):
            raise ValueError(
                f"bounds as a list needs one entry per level ({tower.depth}) of an "
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
        out.append({n: check_bounds(f"bounds[{n!r}]", p) for n, p in level.items()})
    return out


def bound(tower: Stack, bounds: list[dict[str, Bounds]]) -> Stack:
    """`tower` with level k's named hyperparameters bounded by `bounds[k]` (one
    entry for a tied tower's one set)."""
    if tower.tie:
        levels = [with_bounds(o, bounds[0]) for o in tower.levels]
    else:
        levels = [with_bounds(o, b) for o, b in zip(tower.levels, bounds)]
    # Only the levels change: every other field of the tower (scheme, tying,
    # warm-up) is kept as it is, including any added later.
    return eqx.tree_at(lambda t: t.levels, tower, tuple(levels))
