"""Towers inside optax.chain, Flax NNX's Optimizer, and on Equinox models."""

import inspect
import types

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import recursive_opt as ro

from .helpers import PROBLEMS

logistic = PROBLEMS[1]


def test_tower_in_optax_chain(getkey):
    tower = ro.Stack[2](ro.SGD(0.05, momentum=0.9))
    tx = optax.chain(optax.clip_by_global_norm(1.0), tower.as_optax())
    params = logistic.init(getkey())
    state = tx.init(params)
    # The same by hand: clip, then the tower.
    ref_state = tower.init(params)
    ref_params = params
    step = jax.jit(tx.update)
    for _ in range(10):
        grads = jax.grad(logistic.loss)(params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        ref_grads = jax.grad(logistic.loss)(ref_params)
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(ref_grads)))
        ref_grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, 1.0 / norm), ref_grads)
        ref_updates, ref_state = tower.update(ref_grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
    chex.assert_trees_all_close(params, ref_params, rtol=1e-9)
    assert _moved(ro.hyperparams(state[1])[0]["lr"], 0.05)
    # The chain's state holds one tower's: hyperparams finds it.
    chex.assert_trees_all_equal(ro.hyperparams(state), ro.hyperparams(state[1]))
    with pytest.raises(ValueError, match="holds 2 towers' states"):
        ro.hyperparams((state, state))


def _assert_same_run(params, state, ref_params, ref_state):
    """Two runs of one tower agree: parameters and every level's
    hyperparameters."""
    chex.assert_trees_all_close(params, ref_params, rtol=1e-12)
    chex.assert_trees_all_close(
        ro.hyperparams(state), ro.hyperparams(ref_state), rtol=1e-12
    )


def _moved(lrs, lr0) -> bool:
    """Every learning rate in `lrs` (a value or a tree of them) has left its
    start `lr0`: the run tuned something."""
    return all(float(v) != pytest.approx(lr0) for v in jax.tree.leaves(lrs))


def test_tower_under_apply_if_finite_skips_a_nan_step(getkey):
    """Under `optax.apply_if_finite` a step with non-finite gradients changes
    nothing (zero updates, the tower's state as it was), and the run goes on
    exactly as a tower that never saw it."""
    tower = ro.Stack[2](ro.Adam(0.02))
    tx = optax.apply_if_finite(tower.as_optax(), max_consecutive_errors=3)
    params = ref_params = logistic.init(getkey())
    state, ref_state = tx.init(params), tower.init(params)
    step, ref_step = jax.jit(tx.update), jax.jit(tower.as_optax().update)
    for t in range(6):
        grads = jax.grad(logistic.loss)(params)
        if t == 3:
            leaves, treedef = jax.tree.flatten(grads)
            bad = treedef.unflatten([jnp.full_like(leaves[0], jnp.nan), *leaves[1:]])
            updates, new_state = step(bad, state, params)
            assert all(np.all(u == 0) for u in jax.tree.leaves(updates))
            assert not bool(new_state.last_finite)
            chex.assert_trees_all_equal(
                ro.hyperparams(new_state), ro.hyperparams(state)
            )
            state = new_state
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        ref_updates, ref_state = ref_step(grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
    _assert_same_run(params, state, ref_params, ref_state)
    assert _moved(ro.hyperparams(state)[0]["lr"], 0.02)


def test_tower_under_multisteps_steps_on_the_mean_gradient(getkey):
    """`optax.MultiSteps(tower.as_optax(), 2)` (gradient accumulation) equals the
    tower stepped every second mini-step on the two gradients' mean."""
    tower = ro.Stack[2](ro.SGD(0.05, momentum=0.9))
    # Newer optax accumulates in float32 unless told: float64 here, as the
    # parameters (older optax has no option and accumulates in their dtype).
    told = "accumulator_dtype" in inspect.signature(optax.MultiSteps).parameters
    kw = {"accumulator_dtype": jnp.float64} if told else {}
    tx = optax.MultiSteps(tower.as_optax(), 2, **kw)
    params = ref_params = logistic.init(getkey())
    state, ref_state = tx.init(params), tower.init(params)
    step, ref_step = jax.jit(tx.update), jax.jit(tower.as_optax().update)
    pending = []
    for t in range(8):
        grads = jax.tree.map(
            lambda g: g * (1.0 + 0.5 * (t % 2)), jax.grad(logistic.loss)(params)
        )
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        pending.append(grads)
        if t % 2 == 0:
            assert all(np.all(u == 0) for u in jax.tree.leaves(updates))
            continue
        mean = jax.tree.map(lambda a, b: (a + b) / 2, *pending)
        pending = []
        ref_updates, ref_state = ref_step(mean, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
        _assert_same_run(params, state, ref_params, ref_state)
    assert _moved(ro.hyperparams(state)[0]["lr"], 0.05)


def test_tower_on_part_of_the_model_under_multi_transform(getkey):
    """`optax.multi_transform` with a tower on some arrays and optax's Adam on
    the rest equals the tower run on those arrays alone beside Adam on the
    others: the tower's hypergradients see only its own arrays."""
    tower_tx, adam = ro.Stack[3](ro.Adam(0.02)).as_optax(), optax.adam(0.01)
    labels = {"w": "tower", "b": "adam"}
    tx = optax.multi_transform({"tower": tower_tx, "adam": adam}, labels)
    params = logistic.init(getkey())
    state = tx.init(params)
    ref_w, ref_b = {"w": params["w"]}, {"b": params["b"]}
    ref_tower, ref_adam = tower_tx.init(ref_w), adam.init(ref_b)
    step = jax.jit(tx.update)
    tower_step, adam_step = jax.jit(tower_tx.update), jax.jit(adam.update)
    for _ in range(6):
        grads = jax.grad(logistic.loss)(params)
        updates, state = step(grads, state, params)
        params = optax.apply_updates(params, updates)
        u_w, ref_tower = tower_step({"w": grads["w"]}, ref_tower, ref_w)
        u_b, ref_adam = adam_step({"b": grads["b"]}, ref_adam, ref_b)
        ref_w, ref_b = optax.apply_updates(ref_w, u_w), optax.apply_updates(ref_b, u_b)
    chex.assert_trees_all_close(params, {**ref_w, **ref_b}, rtol=1e-12)
    lrs = ro.hyperparams(state)[0]["lr"]
    ref_lr = ro.hyperparams(ref_tower)[0]["lr"]["w"]
    chex.assert_trees_all_close(lrs["w"], ref_lr, rtol=1e-12)
    assert isinstance(lrs["b"], optax.MaskedNode)  # not the tower's
    assert _moved(lrs["w"], 0.02)


def test_as_optax_is_plain_closures():
    """A bound method of an eqx.Module flattens to the module's arrays, which Flax
    NNX refuses as static data; plain closures are opaque leaves."""
    for tx in [ro.Stack[2](ro.Adam(1e-3)).as_optax(), ro.SGD(0.1).as_optax()]:
        leaves = jax.tree.leaves(tx)
        assert len(leaves) == 2
        assert all(isinstance(f, types.FunctionType) for f in leaves)
    assert any(eqx.is_array(x) for x in jax.tree.leaves(ro.SGD(0.1).update))


def test_tower_in_flax_nnx_optimizer():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 1, rngs=rngs)
            self.dropout_rate = 0.0  # a non-array attribute

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))[..., 0]

    kx, kw = jr.split(jr.key(0))
    x = jr.normal(kx, (64, 5))
    y = (x @ jr.normal(kw, (5,)) > 0).astype(jnp.float32)

    def loss_fn(model):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(model(x), y))

    model = MLP(nnx.Rngs(0))
    tower = ro.Stack[3](ro.Adam(1e-2))
    optimizer = nnx.Optimizer(model, tower.as_optax(), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
    state = jax.tree.map(
        lambda v: v.get_value() if hasattr(v, "get_value") else v,
        optimizer.opt_state,
        is_leaf=lambda v: isinstance(v, nnx.Variable),
    )
    lr1, _, lr3 = (jax.tree.leaves(h["lr"]) for h in ro.hyperparams(state))
    # Read straight from the optimiser: its nnx variables are unwrapped.
    direct = ro.hyperparams(optimizer.opt_state)
    chex.assert_trees_all_equal(
        [jax.tree.leaves(h) for h in direct],
        [jax.tree.leaves(h) for h in ro.hyperparams(state)],
    )
    assert len(lr1) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))  # per leaf
    assert all(float(v) != pytest.approx(1e-2) for v in lr1)
    assert lr3 == [pytest.approx(1e-2)]


def test_tower_on_equinox_model_with_non_array_fields(getkey):
    model = eqx.nn.MLP(5, 1, 8, depth=2, activation=jnp.tanh, key=getkey())
    kx, kw = jr.split(jr.key(0))
    x = jr.normal(kx, (64, 5))
    y = (x @ jr.normal(kw, (5,)) > 0).astype(jnp.float64)

    def loss_fn(model):
        logits = jax.vmap(model)(x)[:, 0]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    tower = ro.Stack[2](ro.SGD(ro.hyper(0.1, per="leaf"), momentum=0.9))
    state = tower.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = tower.update(
            grads, state, eqx.filter(model, eqx.is_inexact_array)
        )
        return eqx.apply_updates(model, updates), state, loss

    losses = []
    # 100 steps: on these separable data the loss falls towards 0, the lrs climb,
    # and both a 100- and the SGD default's 300-step warm-up spike once before
    # step 60 (to 0.3 and 3.2 from 0.72) and recover (4e-5 and 2e-7 at step 100).
    for _ in range(100):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert model.activation is jnp.tanh
    lr = ro.hyperparams(state)[0]["lr"]
    leaves = jax.tree.leaves(lr)
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    assert np.std([float(v) for v in leaves]) > 0
