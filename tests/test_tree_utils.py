"""optax's hyperparameter conventions on a tower's state, and orbax checkpoints.

A tower's state shows every level's hyperparameter values where
`optax.tree_utils` looks for them; a filtered `tree_set` changes one level for the
next update without a retrace. orbax's `StandardCheckpointer` restores a state
bit for bit, alone and inside a Flax NNX optimiser.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import recursive_opt as ro

tu = optax.tree_utils
PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3, 0.1])}


def grads_of(params):
    return jax.tree.map(lambda p: 0.5 * p + 0.1, params)


def tower(lr=1e-3):
    return ro.Stack(ro.Adam(lr), ro.Adam(1e-2), ro.SGD(1e-4))


def f(x):
    """A scalar in the dtype of the state's values (float64 in the tests), so that
    setting it changes no abstract value."""
    return jnp.asarray(x, jnp.result_type(float))


def close_trees(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.allclose(x, y, rtol=1e-12, atol=0) for x, y in zip(la, lb)
    )


def equal_trees(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def stepped(t, n=3):
    state = t.init(PARAMS)
    for _ in range(n):
        _, state = t.update(grads_of(PARAMS), state)
    return state


def test_every_level_is_found_by_name_with_its_level_in_the_path():
    state = stepped(tower())
    found = tu.tree_get_all_with_path(state, "lr")
    assert len(found) == 3
    levels = ro.hyperparams(state)
    for k, (path, value) in enumerate(found):
        assert jax.tree_util.SequenceKey(k) in path
        assert ro.at_level(k + 1)(path, value)
        assert not ro.at_level(k + 2)(path, value)
        np.testing.assert_array_equal(value, levels[k]["lr"])
    # Adam's betas live at levels 1 and 2; SGD has none.
    assert len(tu.tree_get_all_with_path(state, "b1")) == 2
    with pytest.raises(KeyError):
        tu.tree_get(state, "lr")  # ambiguous on a tower
    np.testing.assert_array_equal(
        tu.tree_get(state, "lr", filtering=ro.at_level(2)), levels[1]["lr"]
    )


def test_filtered_tree_set_changes_one_level_for_the_next_update_without_retrace():
    t = tower()
    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(None)
        return t.update(grads, state)

    state = t.init(PARAMS)
    new = tu.tree_set(state, ro.at_level(1), lr=f(0.05))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    before, after = ro.hyperparams(state), ro.hyperparams(new)
    np.testing.assert_allclose(after[0]["lr"], 0.05, rtol=1e-6)
    assert equal_trees(before[1:], after[1:])
    assert equal_trees(
        {k: v for k, v in before[0].items() if k != "lr"},
        {k: v for k, v in after[0].items() if k != "lr"},
    )

    # The next update is the one of a tower started at lr 0.05 (computed apart).
    u_set, s_set = update(grads_of(PARAMS), new)
    u_ref, s_ref = tower(0.05).update(grads_of(PARAMS), tower(0.05).init(PARAMS))
    assert close_trees(u_set, u_ref)  # jitted against eager
    assert close_trees(ro.hyperparams(s_set), ro.hyperparams(s_ref))
    u_old, _ = update(grads_of(PARAMS), state)
    assert not equal_trees(u_old, u_set)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "level1",
    [ro.Adam(ro.hyper(0.01)), ro.SGD(ro.hyper(0.01), momentum=0.9), ro.RMSProp(0.01)],
    ids=["adam", "sgd-momentum", "rmsprop"],
)
def test_the_next_hypergradient_takes_the_last_step_at_the_set_value(level1):
    """As the optax how-to says: after an lr is set r times higher, the level
    above's next hypergradient is r x g . u (g the new gradients, u the last
    update, taken at the old lr): the last step's direction at the new lr."""
    lr2 = 1e-3
    t = ro.Stack(level1, ro.SGD(lr2))  # level 2 plain SGD: its step shows it
    params, state = PARAMS, t.init(PARAMS)
    for _ in range(3):
        u, state = t.update(grads_of(params), state, params)
        params = ro.apply_updates(params, u)
    g = grads_of(params)
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(u)))
    old = ro.hyperparams(state)[0]["lr"]
    for r in (1.0, 10.0):
        new = tu.tree_set(state, ro.at_level(1), lr=f(r * old))
        _, after = t.update(g, new, params)
        hg = (np.log(r * old) - np.log(ro.hyperparams(after)[0]["lr"])) / lr2
        np.testing.assert_allclose(hg, r * dot, rtol=1e-9)
    assert abs(dot) > 1e-6


def test_unchanged_values_keep_the_raw_state_bit_for_bit():
    t = tower()
    state = stepped(t, 2)
    # Rewriting every value with itself is no change.
    same = tu.tree_set(state, ro.at_level(1), lr=state.hyperparams[0]["lr"])
    assert equal_trees(same.contents, state.contents)
    assert equal_trees(
        t.update(grads_of(PARAMS), same), t.update(grads_of(PARAMS), state)
    )


def test_inside_an_optax_chain():
    t = tower()
    chain = optax.chain(optax.clip_by_global_norm(1.0), t.as_optax())
    state = chain.init(PARAMS)
    found = tu.tree_get_all_with_path(state, "lr")
    assert len(found) == 3
    new = tu.tree_set(state, ro.at_level(3), lr=f(0.2))
    np.testing.assert_allclose(ro.hyperparams(new[1])[2]["lr"], 0.2, rtol=1e-6)
    assert equal_trees(ro.hyperparams(new[1])[:2], ro.hyperparams(state[1])[:2])


def test_tied_tower_has_one_set():
    t = ro.Stack[3](ro.SGD(0.1), tie=True)
    state = t.init(PARAMS)
    (found,) = tu.tree_get_all_with_path(state, "lr")
    np.testing.assert_array_equal(found[1], ro.hyperparams(state)[0]["lr"])
    new = tu.tree_set(state, ro.at_level(1), lr=f(0.02))
    assert all(np.isclose(h["lr"], 0.02) for h in ro.hyperparams(new))


def test_one_value_sets_every_leaf_of_a_per_leaf_hyperparameter():
    t = ro.Stack(ro.SGD(ro.hyper(0.1, per="leaf")), ro.SGD(1e-3))
    state = t.init(PARAMS)
    new = tu.tree_set(state, ro.at_level(1), lr=f(0.3))
    lr = ro.hyperparams(new)[0]["lr"]
    assert jax.tree.structure(lr) == jax.tree.structure(PARAMS)
    for leaf in jax.tree.leaves(lr):
        np.testing.assert_allclose(leaf, 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="structure"):
        tu.tree_set(state, ro.at_level(1), lr=[f(0.3)] * 3).contents


def test_a_value_out_of_bounds_is_moved_into_them():
    t = ro.Stack(ro.SGD(ro.hyper(0.1, bounds=(0.01, 0.5))), ro.SGD(1e-3))
    new = tu.tree_set(t.init(PARAMS), ro.at_level(1), lr=f(3.0))
    np.testing.assert_allclose(ro.hyperparams(new)[0]["lr"], 0.5, rtol=1e-6)


def test_flax_nnx_optimizer_sets_a_level_through_its_variable():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)

    def loss(m):
        return jnp.mean(m(x) ** 2)

    def run(lr, set_lr=None):
        m = nnx.clone(model)
        opt = nnx.Optimizer(m, tower(lr).as_optax(), wrt=nnx.Param)
        found = tu.tree_get_all_with_path(opt.opt_state, "lr")
        assert len(found) == 3
        if set_lr is not None:
            (var,) = [v for p, v in found if ro.at_level(1)(p, v)]
            var.value = f(set_lr)
        opt.update(m, nnx.grad(loss)(m))
        return nnx.state(m, nnx.Param)

    assert close_trees(run(1e-3, set_lr=0.05), run(0.05))
    assert not equal_trees(run(1e-3), run(0.05))


def test_at_level_rejects_a_bad_level():
    with pytest.raises(ValueError, match="level"):
        ro.at_level(0)


def test_orbax_restores_a_tower_state_bit_for_bit(tmp_path):
    t = tower()
    state = stepped(t)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", state)
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, t.init(PARAMS))
    restored = checkpointer.restore(tmp_path / "state", abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert equal_trees(restored, state)
    assert equal_trees(
        t.update(grads_of(PARAMS), restored), t.update(grads_of(PARAMS), state)
    )


def test_orbax_restores_an_nnx_optimizer_holding_a_tower(tmp_path):
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)

    def loss(m):
        return jnp.mean(m(x) ** 2)

    def make(seed):
        m = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
        return m, nnx.Optimizer(m, tower().as_optax(), wrt=nnx.Param)

    model, opt = make(0)
    for _ in range(3):
        opt.update(model, nnx.grad(loss)(model))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "opt", nnx.state(opt))
    checkpointer.wait_until_finished()

    model2, opt2 = make(1)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(opt2))
    nnx.update(opt2, checkpointer.restore(tmp_path / "opt", abstract))
    nnx.update(model2, nnx.state(model, nnx.Param))
    assert equal_trees(nnx.state(opt2), nnx.state(opt))
    opt.update(model, nnx.grad(loss)(model))
    opt2.update(model2, nnx.grad(loss)(model2))
    assert equal_trees(nnx.state(model2), nnx.state(model))


def test_per_element_hyperparameters_stay_out_of_the_view():
    """Their values would be another parameter-sized array in the state."""
    t = ro.Stack(ro.SGD(ro.hyper(0.1, per="element")), ro.SGD(1e-3))
    state = t.init(PARAMS)
    found = tu.tree_get_all_with_path(state, "lr")
    assert len(found) == 1 and ro.at_level(2)(*found[0])
    new = state.set_hyperparams(1, {"lr": 0.3})  # the way to set them
    for leaf in jax.tree.leaves(ro.hyperparams(new)[0]["lr"]):
        np.testing.assert_allclose(leaf, 0.3, rtol=1e-6)


@pytest.mark.parametrize(
    "new, match",
    [
        ({"lr": -0.1}, r"level 1's 'lr' must be > 0 under its 'log' transform"),
        ({"lr": float("nan")}, r"'lr' must be > 0"),
        ({"lrr": 0.1}, r"has no hyperparameter 'lrr'; it has \['lr'\]"),
    ],
)
def test_set_hyperparams_checks_concrete_values(new, match):
    state = ro.Stack(ro.SGD(ro.hyper(0.1, per="element")), ro.SGD(1e-3)).init(PARAMS)
    with pytest.raises(ValueError, match=match):
        state.set_hyperparams(1, new)


def test_tree_set_out_of_range_is_nan_as_documented():
    # tree_set cannot check (optax's utility); the docstring says what follows.
    state = ro.Stack[2](ro.SGD(0.1)).init(PARAMS)
    bad = tu.tree_set(state, ro.at_level(1), lr=-0.1)
    assert all(np.isnan(v) for v in jax.tree.leaves(ro.hyperparams(bad)[0]["lr"]))
