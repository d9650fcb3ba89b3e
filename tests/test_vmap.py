"""vmap over populations of towers with different initial hyperparameters."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro

from .helpers import PROBLEMS

logistic = PROBLEMS[1]


def _train(lr, momentum, params, tie):
    tower = ro.Stack[3](ro.SGD(lr, momentum=momentum), tie=tie)

    def body(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(logistic.loss)(params)
        updates, state = tower.update(grads, state, params)
        return (ro.apply_updates(params, updates), state), loss

    (params, state), losses = jax.lax.scan(
        body, (params, tower.init(params)), None, length=30
    )
    return params, ro.hyperparams(state), losses


@pytest.mark.parametrize("tie", [False, True])
def test_vmap_over_initial_hyperparameters(tie, getkey):
    lrs = jnp.array([0.01, 0.05, 0.2])
    moms = jnp.array([0.5, 0.9, 0.0 + 0.3])
    params = logistic.init(getkey())
    batched = jax.jit(jax.vmap(lambda lr, m: _train(lr, m, params, tie)))(lrs, moms)
    assert batched[2].shape == (3, 30)
    for i in range(3):
        single = jax.jit(lambda lr, m: _train(lr, m, params, tie))(lrs[i], moms[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], batched), single, rtol=1e-9, atol=1e-12
        )
    # Different starting points really give different towers.
    # (Level 1 has one lr per leaf: compare the first leaf's.)
    lr = jax.tree.leaves(batched[1][0]["lr"])[0]
    assert not jnp.allclose(lr[0], lr[1])


def test_vmap_over_tower_state(getkey):
    """vmap over a batch of initial states built outside the vmapped function."""
    tower = ro.Stack[2](ro.Adam(1e-2))
    params = jax.vmap(logistic.init)(jax.random.split(getkey(), 4))
    states = jax.vmap(tower.init)(params)

    def step(p, s):
        updates, s = tower.update(jax.grad(logistic.loss)(p), s, p)
        return ro.apply_updates(p, updates), s

    batched = jax.jit(jax.vmap(step))
    p1, s1 = batched(params, states)
    # Read a batched state outside vmap: one value per member (after a second
    # step: the first hypergradient is zero).
    for lrs in jax.tree.leaves(ro.hyperparams(batched(p1, s1)[1])[0]["lr"]):
        assert lrs.shape == (4,)  # one lr per leaf, one value per member
        assert len(set(np.asarray(lrs).tolist())) == 4
    p_single, _ = jax.jit(step)(
        jax.tree.map(lambda x: x[2], params), jax.tree.map(lambda x: x[2], states)
    )
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[2], p1), p_single, rtol=1e-9)
