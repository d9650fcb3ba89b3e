"""One step of a tower's levels: the hypergradients bottom up, then the levels top
down (each level's hyperparameters change before the level below uses them; with
`OneStep(fused=True)`, level 1 steps first, with the ones it has)."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from ._flat import flattens, from_flat, to_flat
from ._hyper import clip, per_layer, tuned_raw, with_raw
from ._hypergradients.one_step import (
    scaled,
    step_inputs,
    step_record,
    zero_unless,
)
from ._optax import apply_updates


def ramp(tower, count):
    """The warm-up's factor on level 1's step number `count` (from 0): from
    1/warmup at step 0 to 1 at step warmup - 1, linearly or geometrically."""
    if tower.warmup == 0:
        return None
    dtype = jnp.result_type(float)  # the dtype of the scale a record keeps
    frac = jnp.minimum(1, (count + 1).astype(dtype) / tower.warmup)
    if tower.warmup_shape == "linear":
        return frac
    return jnp.exp(jnp.log(jnp.asarray(tower.warmup, dtype)) * (frac - 1))


class Previous(eqx.Module):
    """Level 1's record in the fused order, and the tower as it was when level 1
    took that step: the hyperparameters of levels 1..d-1 it was taken with, and
    the states and records of levels 2..d-1, from the step before, in which the
    levels above made those hyperparameters. The chain differentiates that path.
    (Copies of hyperparameters: a per-element one costs a parameter-sized array.)"""

    record: PyTree
    opts: tuple  # levels 1..d-1
    states: tuple  # levels 2..d-1
    saved: tuple  # levels 2..d-1


def fused(tower) -> bool:
    return tower.depth > 1 and getattr(tower.hypergradient, "fused", False)


def previous(record, opts, states, saved) -> Previous:
    """`Previous` of level 1's `record` and the tower's levels as they are now."""
    return Previous(record, tuple(opts[:-1]), tuple(states[1:-1]), tuple(saved[1:]))


def _chain(G: list, below, opts, states, saved) -> list:
    """`G` = [grads, G_2] extended with G_3..G_d: the record of each level k in
    2..d-1 (`opts`, `states`, `saved` list those levels; `below`, the levels
    under them) carries the hypergradient of the level below to its own
    hyperparameters, laid out as the level steps those (`_flat`)."""
    for lower, opt, state, record in zip(below, opts, states, saved):
        g, tree = G[-1], tuned_raw(lower)
        if flattens(opt, tree):
            g = to_flat(g, tree)
        G.append(record.hypergrad(opt, state, g))
    return G


def update_untied(tower, grads, cotangent, state, params, hvps):
    d, scheme = tower.depth, tower.hypergradient
    opts, states, saved = list(state.opts), list(state.states), list(state.saved)
    if d == 1:
        updates, states[0] = opts[0].update(grads, states[0], params)
        updates = scaled(updates, ramp(tower, state.count))
        return updates, tuple(opts), tuple(states), tuple(saved)
    if fused(tower):
        return _update_fused(tower, grads, cotangent, state, params, hvps)
    has_prev = state.count > 0
    # Hypergradients of every level, from the previous step's updates.
    G2 = scheme.hypergrad(opts[0], states[0], saved[0], cotangent)
    G = _chain(
        [grads, G2], opts[: d - 2], opts[1 : d - 1], states[1 : d - 1], saved[1:]
    )
    G[1:] = [zero_unless(has_prev, g) for g in G[1:]]
    # Top down: each level's hyperparameters change before the level below
    # uses them, and bounds hold before it steps.
    before = (opts[0], opts[1:], states[1:], saved[1:])
    _levels_above(opts, states, saved, G)
    take = scheme.upper_steps(saved[0])
    if take is not None:  # the levels above step only when the scheme says
        after = (opts[0], opts[1:], states[1:], saved[1:])
        opts[0], opts[1:], states[1:], saved[1:] = _select(take, after, before)
    updates, states[0], saved[0] = scheme.step(
        opts[0],
        grads,
        states[0],
        params,
        saved[0],
        hvps,
        ramp(tower, state.count),
        cotangent,
    )
    return updates, tuple(opts), tuple(states), tuple(saved)


def _update_fused(tower, grads, cotangent, state, params, hvps):
    """Level 1 steps with its current hyperparameters; the hypergradients of the
    step before it then move them (and the levels above) for the next step."""
    scheme = tower.hypergradient
    opts, states, saved = list(state.opts), list(state.states), list(state.saved)
    prev = saved[0]
    # Step t-1 was taken with prev.opts[0], which the levels above had made at
    # step t-2 from prev's records: the chain differentiates through those.
    G2 = scheme.hypergrad(prev.opts[0], states[0], prev.record, cotangent)
    G = _chain([grads, G2], prev.opts[:-1], prev.opts[1:], prev.states, prev.saved)
    # No step before the first; no level above had stepped before the second.
    G[1] = zero_unless(state.count > 0, G[1])
    G[2:] = [zero_unless(state.count > 1, g) for g in G[2:]]
    now = (list(opts), list(states), list(saved))  # before any level moves
    updates, states[0], record = scheme.step(
        opts[0],
        grads,
        states[0],
        params,
        prev.record,
        hvps,
        ramp(tower, state.count),
        cotangent,
    )
    _levels_above(opts, states, saved, G)
    saved[0] = previous(record, *now)
    return updates, tuple(opts), tuple(states), tuple(saved)


def _levels_above(opts: list, states: list, saved: list, G: list) -> None:
    """Levels d..2, top down, each moving the level below's hyperparameters with
    its hypergradient `G[k]` (in place); bounds hold before the level below steps.
    The top level keeps no record: its update is never differentiated. A level
    steps one value per layer (`per="layer"`) by the layer's summed
    hypergradient; the chain above it sums over the layer's leaves, so `G` keeps
    their own."""
    d = len(opts)
    for k in reversed(range(1, d)):
        tree = tuned_raw(opts[k - 1])
        target, g = tree, per_layer(opts[k - 1], G[k])
        flat = flattens(opts[k], tree)
        if flat:  # one vector per dtype (`_flat`)
            target, g = to_flat(tree, tree), to_flat(g, tree)
        if k < d - 1:
            updates, states[k], saved[k] = step_record(opts[k], g, states[k], target)
        else:
            updates, states[k] = opts[k].update(g, states[k], target)
        new = apply_updates(target, updates)
        opts[k - 1] = clip(with_raw(opts[k - 1], from_flat(new, tree) if flat else new))


def update_tied(tower, grads, cotangent, state, params, hvps):
    scheme = tower.hypergradient
    (opt,) = state.opts
    saved_model, saved_self = state.saved
    # G2 from the model step, G3.. from the self-update; summed over uses.
    G = scheme.hypergrad(opt, state.states[0], saved_model, cotangent)
    total = G
    for _ in range(tower.depth - 2):
        G = saved_self.hypergrad(opt, state.states[1], G)
        total = jax.tree.map(jnp.add, total, G)
    total = per_layer(opt, zero_unless(state.count > 0, total))
    h = tuned_raw(opt)
    h_updates, self_state, new_saved_self = step_inputs(opt, total, state.states[1], h)
    new_opt = clip(with_raw(opt, apply_updates(h, h_updates)))
    take = scheme.upper_steps(saved_model)
    if take is not None:
        opt, self_state, saved_self = _select(
            take,
            (new_opt, self_state, new_saved_self),
            (opt, state.states[1], saved_self),
        )
    else:
        opt, saved_self = new_opt, new_saved_self
    updates, model_state, saved_model = scheme.step(
        opt,
        grads,
        state.states[0],
        params,
        saved_model,
        hvps,
        ramp(tower, state.count),
        cotangent,
    )
    return updates, (opt,), (model_state, self_state), (saved_model, saved_self)


def _select(pred, on_true, on_false):
    return jax.tree.map(
        lambda a, b: jnp.where(pred, a, b),
        on_true,
        on_false,
    )
