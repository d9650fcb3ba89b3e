"""Towers compile once and run as one program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro

from .helpers import CATALOGUE, CATALOGUE_IDS, PROBLEMS, copies

logistic = PROBLEMS[1]


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_traces_once(entry, tie, getkey):
    num_traces = 0
    tower = copies(3, entry.make("leaf"), tie)

    @jax.jit
    def step(params, state):
        nonlocal num_traces
        num_traces += 1
        updates, state = tower.update(jax.grad(logistic.loss)(params), state, params)
        return ro.apply_updates(params, updates), state

    params = logistic.init(getkey())
    state = tower.init(params)
    for _ in range(20):
        params, state = step(params, state)
    assert num_traces == 1


def test_jit_matches_eager(getkey):
    tower = copies(3, ro.SGD(0.05, momentum=0.9))
    params = logistic.init(getkey())
    eager_p, jit_p = params, params
    eager_s = jit_s = tower.init(params)

    def step(params, state):
        updates, state = tower.update(jax.grad(logistic.loss)(params), state, params)
        return ro.apply_updates(params, updates), state

    jstep = jax.jit(step)
    for _ in range(10):
        eager_p, eager_s = step(eager_p, eager_s)
        jit_p, jit_s = jstep(jit_p, jit_s)
    for a, b in zip(
        jax.tree.leaves((eager_p, eager_s)), jax.tree.leaves((jit_p, jit_s))
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def test_scan_over_steps(getkey):
    """The whole training loop as one lax.scan program."""
    tower = ro.Stack[2](ro.Adam(1e-2))
    params = logistic.init(getkey())

    def body(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(logistic.loss)(params)
        updates, state = tower.update(grads, state, params)
        return (ro.apply_updates(params, updates), state), loss

    (params, state), losses = jax.jit(
        lambda p: jax.lax.scan(body, (p, tower.init(p)), None, length=100)
    )(params)
    assert losses.shape == (100,)
    assert losses[-1] < 0.5 * losses[0]
    lrs = jax.tree.leaves(ro.hyperparams(state)[0]["lr"])  # one per leaf
    assert len(lrs) == len(jax.tree.leaves(params))
    assert all(jnp.isfinite(lr) for lr in lrs)


@pytest.mark.parametrize("tie", [False, True])
def test_state_and_params_can_be_donated(tie, getkey):
    """No two leaves of a fresh state share a buffer (with each other or params)."""
    tower = copies(3, ro.Adam(1e-2, weight_decay=1e-3), tie)

    def step(params, state):
        updates, state = tower.update(jax.grad(logistic.loss)(params), state, params)
        return ro.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    params = logistic.init(getkey())
    state = tower.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert jnp.all(jnp.isfinite(params["w"]))


def test_jit_of_the_bound_update_methods():
    """`jax.jit(tower.update)` and `jax.jit(opt.update)` work and compile once."""
    params = PROBLEMS[1].init(jax.random.key(0))
    grads = jax.tree.map(jnp.ones_like, params)
    for obj in [ro.Stack[3](ro.Adam(1e-2)), ro.SGD(0.1, momentum=0.9)]:
        update = jax.jit(obj.update)
        state = eager_state = obj.init(params)
        for _ in range(3):
            updates, state = update(grads, state, params)
            eager_updates, eager_state = obj.update(grads, eager_state, params)
            for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(eager_updates)):
                np.testing.assert_allclose(a, b, rtol=1e-12)
        assert update._cache_size() == 1
