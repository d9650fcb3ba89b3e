"""Tower structure: depth 1 is the optimiser, state structure is fixed, readouts."""

import dataclasses
import warnings

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt._pack import decode, encode, pack, unpack

from .helpers import CATALOGUE, CATALOGUE_IDS, PROBLEMS, copies, run_tower, x64

logistic = PROBLEMS[1]


@pytest.mark.parametrize("per", ["tree", "leaf", "element"])
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_depth_one_is_the_optimiser(entry, per, getkey):
    opt = entry.make(per)
    params = logistic.init(getkey())
    tower = ro.Stack[1](opt)
    # Eagerly, bit for bit (per="element" applies the transform to arrays, whose
    # vectorised exp/sigmoid may differ from the scalar one by an ulp).
    tower_p, plain_p = params, params
    tower_s, plain_s = tower.init(params), opt.init(params)
    for _ in range(5):
        u, tower_s = tower.update(jax.grad(logistic.loss)(tower_p), tower_s, tower_p)
        tower_p = ro.apply_updates(tower_p, u)
        u, plain_s = opt.update(jax.grad(logistic.loss)(plain_p), plain_s, plain_p)
        plain_p = ro.apply_updates(plain_p, u)
    if per == "element":
        chex.assert_trees_all_close(tower_p, plain_p, rtol=1e-14, atol=1e-16)
    else:
        chex.assert_trees_all_equal(tower_p, plain_p)
    # Under jit the plain optimiser's hyperparameters are compile-time constants
    # (folded by XLA) while the tower's are state: equal up to rounding.
    tower_params, state, _ = run_tower(tower, logistic.loss, params, 20)
    plain_params, _, _ = run_tower(opt, logistic.loss, params, 20)
    chex.assert_trees_all_close(tower_params, plain_params, rtol=1e-14, atol=1e-15)
    # Depth 1 never changes its hyperparameters.
    chex.assert_trees_all_close(
        ro.hyperparams(state)[0], ro.hyperparams(ro.Stack[1](opt).init(params))[0]
    )


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_state_structure_is_fixed(depth, tie, getkey):
    tower = ro.Stack[depth](ro.Adam(1e-2, weight_decay=1e-3), tie=tie)
    params = logistic.init(getkey())
    state0 = tower.init(params)
    state = state0
    for _ in range(3):
        updates, state = tower.update(jax.grad(logistic.loss)(params), state, params)
        params = ro.apply_updates(params, updates)
    chex.assert_trees_all_equal_shapes_and_dtypes(state0, state)
    assert jax.tree.structure(state0) == jax.tree.structure(state)


def test_untied_top_level_is_fixed_and_lower_levels_move(getkey):
    tower = copies(3, ro.SGD(0.05, momentum=0.9))
    _, state, _ = run_tower(tower, logistic.loss, logistic.init(getkey()), 30)
    hp = ro.hyperparams(state)
    assert len(hp) == 3
    np.testing.assert_allclose(hp[2]["lr"], 0.05, rtol=1e-12)
    np.testing.assert_allclose(hp[2]["momentum"], 0.9, rtol=1e-12)
    assert abs(float(hp[0]["lr"]) - 0.05) > 1e-4
    assert abs(float(hp[1]["lr"]) - 0.05) > 1e-8


def test_tied_levels_share_one_set(getkey):
    tower = ro.Stack[3](ro.SGD(0.05, momentum=0.9), tie=True)
    _, state, _ = run_tower(tower, logistic.loss, logistic.init(getkey()), 30)
    hp = ro.hyperparams(state)
    assert len(hp) == 3 and len(state.opts) == 1
    chex.assert_trees_all_equal(hp[0], hp[1], hp[2])
    assert abs(float(hp[0]["lr"]) - 0.05) > 1e-4
    # The tied top is not fixed: it is the same set.
    assert ro.Stack[1](ro.SGD(0.1), tie=True).tie is False


def test_per_shapes_in_hyperparams(getkey):
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    opt = ro.SGD(ro.hyper(0.1, per="element"), momentum=ro.hyper(0.9, per="leaf"))
    state = ro.Stack(opt, ro.SGD(ro.hyper(1e-3, per="leaf"))).init(params)
    hp = ro.hyperparams(state)
    chex.assert_trees_all_equal_shapes(hp[0]["lr"], params)
    assert jax.tree.structure(hp[0]["momentum"]) == jax.tree.structure(params)
    assert all(jnp.shape(v) == () for v in jax.tree.leaves(hp[0]["momentum"]))
    # Level 2's per="leaf" lr has one scalar per tuned leaf of level 1.
    assert jax.tree.structure(hp[1]["lr"]) == jax.tree.structure(
        {"lr": params, "momentum": params}
    )


def test_per_leaf_learning_rates_diverge(getkey):
    """Weights and biases get their own learning rates when tuned per leaf."""
    tower = ro.Stack(ro.SGD(ro.hyper(0.05, per="leaf")), ro.Adam(1e-2))
    _, state, _ = run_tower(tower, logistic.loss, logistic.init(getkey()), 40)
    lr = ro.hyperparams(state)[0]["lr"]
    assert abs(float(lr["w"]) - float(lr["b"])) > 1e-4


def test_tower_does_not_rerun_the_model():
    """The chain needs only gradients: the loss is evaluated once per step."""
    calls = []

    def loss(p):
        jax.debug.callback(lambda: calls.append(1))
        return logistic.loss(p)

    run_tower(ro.Stack[3](ro.Adam(1e-2)), loss, logistic.init(jax.random.key(0)), 5)
    jax.effects_barrier()
    assert len(calls) == 5


def test_pack_round_trip_with_batch_axes():
    tree = {
        "scalar": jnp.float32(1.5),
        "count": jnp.int32(7),
        "small": jnp.arange(6.0).reshape(2, 3),
        "big": jnp.ones((40, 40), jnp.float32),
        "none": None,
    }
    packed = pack(tree)
    # One float32 vector (the counter in it as 16-bit pieces), one float64 vector.
    assert [f.dtype for f in packed.flats] == [jnp.float32, jnp.float64]
    assert len(packed.big) == 1
    chex.assert_trees_all_equal(unpack(packed), tree)
    batched = jax.vmap(lambda i: pack(jax.tree.map(lambda x: x + i, tree)))(
        jnp.arange(3)
    )
    out = unpack(batched)
    chex.assert_trees_all_equal(out["small"][2], tree["small"] + 2)
    chex.assert_trees_all_equal(out["count"], jnp.array([7, 8, 9], jnp.int32))
    # Counters at the ends of their range (2**31 - 1 would be a NaN's bits as a
    # float), batched, under jit; every leaf stored is a float.
    ends = jnp.array([0, 2**31 - 1, -(2**31)], jnp.int32)
    edge = jax.jit(jax.vmap(lambda c: pack({**tree, "count": c})))(ends)
    assert all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(edge))
    assert all(jnp.isfinite(x).all() for x in jax.tree.leaves(edge))
    chex.assert_trees_all_equal(jax.jit(unpack)(edge)["count"], ends)


@pytest.mark.parametrize("carrier", [jnp.float32, jnp.float64])
def test_integers_travel_exactly_as_floats(carrier):
    """Integers (step counters) are packed, and read by the step, as 16-bit
    pieces in a float vector: every value comes back bit for bit."""
    cases = [
        jnp.array([0, 1, -1, 2**24 + 1, 2**31 - 1, -(2**31), 123456789], jnp.int32),
        jnp.array([0, 1, 2**32 - 1, 2**31, 2**24 + 3], jnp.uint32),
        jnp.array([0, -1, 2**15 - 1, -(2**15)], jnp.int16),
        jnp.array([0, 255, 128], jnp.uint8),
        jnp.array([[True, False], [False, True]]),
        jnp.int32(2**31 - 2),
    ]
    if carrier == jnp.float64:
        cases.append(jnp.array([2**63 - 1, -(2**63), 2**53 + 1], jnp.int64))
    with x64(carrier == jnp.float64):
        for x in cases:
            x = jnp.asarray(x)
            f = jax.jit(lambda x: decode(encode(x, jnp.dtype(carrier)), x.dtype))
            assert encode(x, jnp.dtype(carrier)).dtype == carrier
            chex.assert_trees_all_equal(f(x), x)


def test_step_reads_the_packed_state_unchanged():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    tower = ro.Stack[3](ro.Adam(1e-2))
    state = tower.init(params)
    contents = state.contents
    # A counter at the end of its range: 2**31 - 1 would be a NaN's bits.
    contents = dataclasses.replace(contents, count=jnp.int32(2**31 - 1))
    state = state.replace_contents(contents)
    read = jax.jit(lambda s: s.contents)(state)
    assert read.count.dtype == jnp.int32
    chex.assert_trees_all_equal(read.count, jnp.int32(2**31 - 1))
    chex.assert_trees_all_equal(read.states, state.states)
    chex.assert_trees_all_equal(read.saved, state.saved)
    chex.assert_trees_all_equal(read.opts, state.opts)


def test_tower_state_has_few_leaves(getkey):
    """Dispatch under jit costs per leaf: upper levels' arrays are packed."""
    params = {"w": jnp.zeros((64, 32)), "b": jnp.zeros(32)}
    state = ro.Stack[4](ro.Adam(1e-3)).init(params)
    # Adam's mu and nu, the stacked Jacobian for "w", plus one packed vector of
    # float32 (the step counters in it too); "b" and all hyperparameter-level
    # arrays are small. Besides, one scalar value per hyperparameter and level
    # (lr, b1, b2, eps at 4 levels; level 1's lr is one per leaf, so two), for
    # optax's tree utilities.
    assert len(jax.tree.leaves(state)) == 3 + 1 + 4 * 4 + 1
    assert len(jax.tree.leaves(state.packed)) == 3 + 1


def test_with_opt_state_replaces_one_level_and_checks_structure():
    params = {"w": jnp.ones(3)}
    tower = ro.Stack(ro.Adam(0.1), ro.SGD(0.01, momentum=0.5))
    state = tower.init(params)
    adam = state.states[0]
    moved = state.with_opt_state(1, adam)
    chex.assert_trees_all_equal(moved.states, state.states)
    nu = [jnp.full(3, 2.0)]
    new = state.with_opt_state(1, eqx.tree_at(lambda s: s.nu, adam, nu))
    np.testing.assert_array_equal(new.states[0].nu[0], 2.0)
    chex.assert_trees_all_equal(new.states[1], state.states[1])
    assert jax.tree.structure(new) == jax.tree.structure(state)
    with pytest.raises(ValueError, match="structure"):
        state.with_opt_state(2, adam)


_X = jax.random.normal(jax.random.key(0), (128, 8), jnp.float32)
_Y = jnp.tanh(_X @ (jnp.arange(8.0, dtype=jnp.float32) / 8))


def _mlp_loss(p):
    h = jnp.tanh(_X.astype(p["w"].dtype) @ p["w"])
    return jnp.mean((h @ p["v"] - _Y.astype(h.dtype)).astype(jnp.float32) ** 2)


@pytest.mark.parametrize(
    "tower",
    [
        ro.Stack[3](ro.Adam(1e-2)),  # one lr per leaf
        ro.Stack[3](ro.SGD(1e-2, momentum=0.9)),
        ro.Stack[3](ro.Adam(1e-2), tie=True),
        ro.Stack(ro.Adam(1e-2), ro.Adam(1e-2)),  # lr, b1 and b2 tuned
        ro.Stack[2](ro.Adam(1e-2), hypergradient=ro.RealTime(0.9)),
    ],
    ids=["adam", "sgd_momentum", "tied", "betas", "real_time"],
)
def test_bfloat16_towers_track_float32_towers(tower):
    """bfloat16 parameters: the state keeps its dtypes through a scan (which would
    refuse a carry that changes them), the learning rates stay float32 and end
    where the same tower's do in float32 (b2 = 0.999 made Adam NaN before)."""
    k1, k2 = jax.random.split(jax.random.key(1))
    init = {
        "w": (jax.random.normal(k1, (8, 16)) * 0.3).astype(jnp.bfloat16),
        "v": (jax.random.normal(k2, (16,)) * 0.3).astype(jnp.bfloat16),
    }

    def run(dtype):
        params = jax.tree.map(lambda a: a.astype(dtype), init)
        state = tower.init(params)

        def body(carry, _):
            params, state = carry
            params, state, loss = tower.step(_mlp_loss, params, state)
            return (params, state), loss

        (params, end), _ = jax.jit(lambda c: jax.lax.scan(body, c, None, 60))(
            (params, state)
        )
        chex.assert_trees_all_equal_dtypes(end, state)
        return params, ro.hyperparams(end)[0]["lr"], _mlp_loss(params)

    p32, lr32, loss32 = run(jnp.float32)
    p16, lr16, loss16 = run(jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(p16, init)
    assert all(jnp.finfo(x.dtype).bits >= 32 for x in jax.tree.leaves(lr16))
    chex.assert_trees_all_close(lr16, lr32, rtol=0.1)
    assert np.isfinite(loss16) and loss16 < 1.3 * loss32 + 1e-3 < _mlp_loss(init)


def test_numpy_float64_params_give_the_float32_tower_without_warnings():
    # x64 off: NumPy's float64 parameters are float32 to JAX, silently, as optax has it.
    params = {"w": np.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": np.zeros(3)}
    grads = jax.tree.map(lambda a: np.full(a.shape, 0.5), params)
    as32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    with x64(False):
        tower = ro.Stack[3](ro.Adam())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            state = tower.init(params)
            updates, state = jax.jit(tower.update)(grads, state, params)
        expected, _ = jax.jit(tower.update)(
            jax.tree.map(jnp.float32, grads), tower.init(as32), as32
        )
    assert {leaf.dtype for leaf in jax.tree.leaves(state)} <= {np.dtype("float32")}
    chex.assert_trees_all_equal(updates, expected)


def test_state_prints_its_count_and_hyperparameters():
    params = {"l1": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}, "out": jnp.ones(2)}
    tower = ro.Stack[2](ro.Adam(0.01))
    state = tower.update(params, tower.init(params), params)[1]
    text = repr(state)
    assert text.startswith("TowerState(depth=2, tied=False, count=1, hyperparams=[{")
    lr = ro.hyperparams(state)[0]["lr"]["l1"]["w"]
    assert f"'lr': {{'l1': {{'b': {float(lr):.4g}, 'w': {float(lr):.4g}}}" in text
    assert "PyTreeDef" not in text and "\n" not in text
    # Abstract and traced states have no values to print: the full form.
    assert "ShapeDtypeStruct" in repr(jax.eval_shape(tower.init, params))
    jax.jit(lambda s: repr(s) and s)(state)
    held = ro.HoldCuts(tower)
    state = held.update(params, held.init(params), params, value=jnp.float32(1))[1]
    assert repr(state) == f"HoldState(tower={state.tower!r}, count=1, held=0)"
