"""`per="layer"`: one hyperparameter value per layer (the leaves one dict or module
below the root holds), moved by the sum of its leaves' hypergradients."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import recursive_opt as ro
from recursive_opt._hyper import layer_groups

from .helpers import run_tower


def test_layers_are_the_containers_below_the_root():
    tree = {
        "dense": [{"w": 1.0, "b": 2.0}, {"w": 3.0, "b": 4.0}],
        "scale": 5.0,  # directly under the root: alone
        "gains": [6.0, 7.0],  # entries of a list: each alone
        "block": {"u": 8.0, "v": 9.0, "inner": {"x": 10.0}},
    }
    # Flattening order: block.inner.x, block.u, block.v, dense[0].b, dense[0].w,
    # dense[1].b, dense[1].w, gains[0], gains[1], scale.
    assert layer_groups(tree) == (0, 1, 1, 2, 2, 3, 3, 4, 5, 6)
    # A list of `(w, b)` tuples (JAX's tutorials, `stax`): each tuple is a layer,
    # as a dict would be; so is a list in a tuple, and one under a dict's list.
    # An array in the root's own list or tuple stays alone.
    assert layer_groups([(1.0, 2.0), (3.0, 4.0), (), [5.0]]) == (0, 0, 1, 1, 2)
    assert layer_groups(([1.0, 2.0], 3.0, {"x": (4.0, 5.0)})) == (0, 0, 1, 2, 3)
    assert layer_groups({"net": [(1.0, 2.0), (3.0, 4.0)]}) == (0, 0, 1, 1)
    # Equinox: the attributes of each `Linear`.
    mlp = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.key(0))
    assert layer_groups(eqx.filter(mlp, eqx.is_array)) == (0, 0, 1, 1, 2, 2)
    # A module at the root: its attributes are leaves under the root.
    assert layer_groups(eqx.nn.Linear(3, 2, key=jax.random.key(0))) == (0, 1)

    # Flax NNX: a variable's `.value` is not a level of its own.
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs)
            self.l2 = nnx.Linear(4, 2, rngs=rngs)

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    assert layer_groups(state) == (0, 0, 1, 1)


def _split(merged):
    """Merged layers `(a + 1, b)` back into `{"w": (a, b), "b": (b,)}`."""
    return {
        "l0": {"w": merged["l0"][:-1], "b": merged["l0"][-1]},
        "l1": {"w": merged["l1"][:-1], "b": merged["l1"][-1]},
        "s": merged["s"],
    }


def _loss(p):
    x = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
    y = jnp.sin(3 * x[:, :2]) + p["s"][None]
    h = jnp.tanh(x @ p["l0"]["w"] + p["l0"]["b"][None])
    return jnp.mean((h @ p["l1"]["w"] + p["l1"]["b"][None] - y) ** 2)


def _params():
    k0, k1 = jax.random.split(jax.random.key(3))
    return {
        "l0": {"w": jax.random.normal(k0, (3, 5)), "b": jnp.zeros(5)},
        "l1": {"w": 0.3 * jax.random.normal(k1, (5, 2)), "b": jnp.zeros(2)},
        "s": jnp.array([0.1, -0.2]),
    }


@pytest.mark.parametrize("tie,upper", [(False, "tree"), (False, "leaf"), (True, "")])
def test_a_layer_tower_is_a_leaf_tower_on_merged_layers(tie, upper):
    """Adam steps elementwise, so one lr for a layer's weights and bias is one lr
    for one array holding both: a per-layer tower on the layers equals a per-leaf
    tower on the merged arrays (whose chain the brute-force tests check), every
    level, every step. With `upper="leaf"` levels 2 and 3 tune one lr per value
    of the level below: one per layer of level 1's, not one per stored copy."""
    params = _params()
    merged = {
        "l0": jnp.concatenate([params["l0"]["w"], params["l0"]["b"][None]]),
        "l1": jnp.concatenate([params["l1"]["w"], params["l1"]["b"][None]]),
        "s": params["s"],
    }

    def tower(per):
        if upper == "leaf":
            return ro.Stack(
                ro.Adam(ro.hyper(1e-2, per=per)),
                ro.Adam(ro.hyper(0.05, per="leaf")),
                ro.Adam(ro.hyper(0.01, per="leaf")),
            )
        if not tie:
            return ro.Stack[3](ro.Adam(ro.hyper(1e-2, per=per)))
        # A tied set tunes all it has, and updates itself: the same `per` for all.
        b1, b2 = ro.hyper(0.9, per=per), ro.hyper(0.999, per=per)
        return ro.Stack[3](ro.Adam(ro.hyper(1e-2, per=per), b1=b1, b2=b2), tie=True)

    p, state, losses = run_tower(tower("layer"), _loss, params, 60)
    pm, state_m, losses_m = run_tower(
        tower("leaf"), lambda q: _loss(_split(q)), merged, 60
    )
    chex.assert_trees_all_close(p, _split(pm), rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(losses, losses_m, rtol=1e-9)
    # Every level's hyperparameters: level 1's per layer in flattening order
    # (l0.b, l0.w | l1.b, l1.w | s) against the merged (l0 | l1 | s).
    # With `upper="leaf"`, level 2's lrs are one per value of level 1's (b1, b2,
    # then the five lrs: two layers' copies), level 3's one per value of level
    # 2's (b1, b2, then level 2's seven lrs with their copies).
    copies = {5: [(0, 1), (2, 3)], 7: [(2, 3), (4, 5)], 9: [(4, 5), (6, 7)]}
    for level, (hp, hp_m) in enumerate(
        zip(ro.hyperparams(state), ro.hyperparams(state_m)), 1
    ):
        for name in hp:
            mine = jax.tree.leaves(hp[name])
            pairs = copies.get(len(mine), [])
            for i, j in pairs:
                assert mine[i] == mine[j]  # a layer's copies: equal, bit for bit
            mine = [v for k, v in enumerate(mine) if k not in {j for _, j in pairs}]
            np.testing.assert_allclose(mine, jax.tree.leaves(hp_m[name]), rtol=1e-9)
            if upper == "leaf" and level < 3:  # level 3 is the top: not tuned
                assert len({float(v) for v in mine}) == len(mine)  # moved apart
    # Not vacuous: the lrs moved, and apart.
    lr = jax.tree.leaves(ro.hyperparams(state)[0]["lr"])
    assert len({float(v) for v in lr}) == 3 and all(abs(v - 1e-2) > 1e-4 for v in lr)


def test_a_layer_moves_by_its_summed_hypergradient():
    """Level 2 (plain SGD on the log lr) moves each layer's lr at step 2 by its
    hypergradient: d loss(params after step 1) / d log lr, with the lr shared by
    the layer's leaves, by autodiff of step 1 written out."""
    params, lr0, lr2 = _params(), 0.05, 1e-3
    tower = ro.Stack(ro.SGD(ro.hyper(lr0, per="layer")), ro.SGD(lr2))
    state = tower.init(params)
    g0 = jax.grad(_loss)(params)
    u, state = tower.update(g0, state, params)
    p1 = ro.apply_updates(params, u)
    _, state = tower.update(jax.grad(_loss)(p1), state, p1)

    def after_step_1(log_lrs):  # one log lr per layer: l0, l1, s
        lrs = {"l0": log_lrs[0], "l1": log_lrs[1], "s": log_lrs[2]}
        return _loss(
            {
                k: jax.tree.map(lambda x, g, k=k: x - jnp.exp(lrs[k]) * g, v, g0[k])
                for k, v in params.items()
            }
        )

    hg = jax.grad(after_step_1)(jnp.full(3, jnp.log(lr0)))
    want = jnp.exp(jnp.log(lr0) - lr2 * hg)
    got = ro.hyperparams(state)[0]["lr"]
    np.testing.assert_allclose(
        [got["l0"]["w"], got["l0"]["b"], got["l1"]["w"], got["l1"]["b"], got["s"]],
        [want[0], want[0], want[1], want[1], want[2]],
        rtol=1e-12,
    )
    assert np.all(np.abs(hg) > 1e-6)  # every layer moved


def test_a_layer_set_apart_moves_together():
    """A layer's arrays whose lrs `tree_set` set apart (as the optax how-to says)
    move by one hypergradient: d loss / d s of a shift s shared by the layer's log
    lrs, each at its own value (autodiff of step 1), so they keep their ratio."""
    params, lr2 = _params(), 1e-3
    lrs = {"l0": {"b": 0.02, "w": 0.05}, "l1": {"b": 0.05, "w": 0.05}, "s": 0.05}
    tower = ro.Stack(ro.SGD(ro.hyper(0.05, per="layer")), ro.SGD(lr2))
    state = tower.init(params)
    view = [jnp.asarray(v, jnp.float64) for v in jax.tree.leaves(lrs)]
    state = optax.tree_utils.tree_set(state, ro.at_level(1), lr=view)
    g0 = jax.grad(_loss)(params)
    u, state = tower.update(g0, state, params)
    p1 = ro.apply_updates(params, u)
    _, state = tower.update(jax.grad(_loss)(p1), state, p1)

    def after_step_1(shifts):  # one shift of the log lrs per layer: l0, l1, s
        shift = {"l0": shifts[0], "l1": shifts[1], "s": shifts[2]}
        return _loss(
            jax.tree.map(
                lambda x, g, lr, s: x - lr * jnp.exp(s) * g,
                params,
                g0,
                lrs,
                {
                    k: jax.tree.map(lambda _, k=k: shift[k], v)
                    for k, v in params.items()
                },
            )
        )

    hg = jax.grad(after_step_1)(jnp.zeros(3))
    want = jax.tree.map(
        lambda lr, s: lr * jnp.exp(-lr2 * s),
        lrs,
        {"l0": {"b": hg[0], "w": hg[0]}, "l1": {"b": hg[1], "w": hg[1]}, "s": hg[2]},
    )
    got = ro.hyperparams(state)[0]["lr"]
    chex.assert_trees_all_close(got, want, rtol=1e-12)
    assert np.all(np.abs(hg) > 1e-6)  # every layer moved
    np.testing.assert_allclose(got["l0"]["b"] / got["l0"]["w"], 0.4, rtol=1e-12)


def test_a_tuple_layer_is_a_dict_layer():
    """The default tower on `[(w, b), ...]` is the tower on `[{"w": w, "b": b},
    ...]`: each tuple's arrays share an lr, as a dict's do, every step."""
    k0, k1 = jax.random.split(jax.random.key(4))
    layers = [
        (jax.random.normal(k0, (3, 5)), jnp.zeros(5)),
        (0.3 * jax.random.normal(k1, (5, 2)), jnp.zeros(2)),
    ]
    x = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)

    def loss(p):  # p: a list of (w, b)
        h = jnp.tanh(x @ p[0][0] + p[0][1][None])
        out = h @ p[1][0] + p[1][1][None]
        return jnp.mean((out - jnp.sin(3 * x[:, :2])) ** 2)

    def as_tuples(p):
        return [(layer["w"], layer["b"]) for layer in p]

    dicts = [{"w": w, "b": b} for w, b in layers]
    tower = ro.Stack[3](ro.Adam(1e-3))
    p, state, losses = run_tower(tower, loss, layers, 40)
    pd, state_d, losses_d = run_tower(tower, lambda q: loss(as_tuples(q)), dicts, 40)
    chex.assert_trees_all_close(p, as_tuples(pd), rtol=1e-9, atol=1e-12)
    chex.assert_trees_all_close(losses, losses_d, rtol=1e-9)
    lrs = ro.hyperparams(state)[0]["lr"]
    chex.assert_trees_all_close(
        lrs, as_tuples(ro.hyperparams(state_d)[0]["lr"]), rtol=1e-9
    )
    assert all(w == b for w, b in lrs)  # shared, bit for bit
    assert abs(float(lrs[0][0]) - float(lrs[1][0])) > 1e-5  # and the layers part


def test_the_default_tower_tunes_one_lr_per_layer():
    """`Stack[3](Adam(lr))` on an Equinox MLP: each `Linear`'s weight and bias
    share an lr, and the layers' lrs part."""
    mlp = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.key(1))
    params, static = eqx.partition(mlp, eqx.is_array)
    x = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)

    def loss(p):
        out = jax.vmap(eqx.combine(p, static))(x)
        return jnp.mean((out - jnp.sin(3 * x[:, :2])) ** 2)

    tower = ro.Stack[3](ro.Adam(1e-4))  # a low start: far from the ceiling of 1
    assert tower.levels[0].lr.per == "layer"
    _, state, losses = run_tower(tower, loss, params, 30)
    layers = ro.hyperparams(state)[0]["lr"].layers
    for layer in layers:
        assert layer.weight == layer.bias
    assert len({float(layer.weight) for layer in layers}) == 3
    assert losses[-1] < losses[0]
