"""One step of a tower's levels: the hypergradients bottom up, then the levels top
down (each level's hyperparameters change before the level below uses them)."""

import jax
import jax.numpy as jnp

from ._hyper import clip, tuned_raw, with_raw
from ._hypergradients.one_step import (
    scaled,
    step_inputs,
    step_record,
    zero_unless,
)
from ._optax import apply_updates


def ramp(tower, count):
    """The warm-up's factor on level 1's step number `count` (from 0)."""
    if tower.warmup == 0:
        return None
    dtype = jnp.result_type(float)  # the dtype of the scale a record keeps
    return jnp.minimum(1, (count + 1).astype(dtype) / tower.warmup)


def update_untied(tower, grads, cotangent, state, params, hvps):
    d, scheme = tower.depth, tower.hypergradient
    opts, states, saved = list(state.opts), list(state.states), list(state.saved)
    if d == 1:
        updates, states[0] = opts[0].update(grads, states[0], params)
        updates = scaled(updates, ramp(tower, state.count))
        return updates, tuple(opts), tuple(states), tuple(saved)
    has_prev = state.count > 0
    # Hypergradients of every level, from the previous step's updates.
    G = [grads, scheme.hypergrad(opts[0], states[0], saved[0], cotangent)]
    for k in range(1, d - 1):
        G.append(saved[k].hypergrad(opts[k], states[k], G[k]))
    G[1:] = [zero_unless(has_prev, g) for g in G[1:]]
    # Top down: each level's hyperparameters change before the level below
    # uses them, and bounds hold before it steps.
    before = (opts[0], opts[1:], states[1:], saved[1:])
    for k in reversed(range(1, d)):
        target = tuned_raw(opts[k - 1])
        if k < d - 1:
            updates, states[k], saved[k] = step_record(opts[k], G[k], states[k], target)
        else:
            updates, states[k] = opts[k].update(G[k], states[k], target)
        opts[k - 1] = clip(with_raw(opts[k - 1], apply_updates(target, updates)))
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
    total = zero_unless(state.count > 0, total)
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
