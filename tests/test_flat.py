"""Levels above level 1 step the scalars below them (one lr per layer or per leaf)
as one vector per dtype (`recursive_opt._flat`): the numbers of stepping them leaf
by leaf, in a program whose upper levels do not grow with the model's leaves."""

import contextlib

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt import _flat
from recursive_opt._hyper import map_scalars


def _model(layers: int = 1):
    # float32 and float64 leaves (the tests run with x64 on): two vectors a level
    params = {
        "head": {"w": jnp.full((2, 2), -0.2, jnp.float64)},
        "scale": jnp.ones(3, jnp.float64),
    }
    for i in range(layers):
        params[f"dense{i}"] = {
            "w": jnp.full((2, 2), 0.3 + 0.1 * i, jnp.float32),
            "b": jnp.zeros(2, jnp.float32),
        }
    return params


def _loss(p):
    h = jnp.array([1.0, -0.5], jnp.float32)
    for i in range(sum(k.startswith("dense") for k in p)):
        h = jnp.tanh(h @ p[f"dense{i}"]["w"] + p[f"dense{i}"]["b"])
    out = h.astype(jnp.float64) @ p["head"]["w"]
    return jnp.sum((out - 1.0) ** 2) + jnp.sum((p["scale"] - 2.0) ** 2)


def _run(tower, steps: int = 12):
    params = _model(2)
    state = tower.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tower.update(jax.grad(_loss)(params), state, params)
        return ro.apply_updates(params, updates), state

    history = []
    for _ in range(steps):
        params, state = step(params, state)
        history.append(ro.hyperparams(state))
    return params, history, state


TOWERS = {
    "default Adam": lambda: ro.Stack[3](ro.Adam()),
    "default SGD, depth 4": lambda: ro.Stack[4](ro.SGD(1e-2, momentum=0.9)),
    "fused order": lambda: ro.Stack[3](ro.Adam(), hypergradient=ro.OneStep(fused=True)),
    "lr and betas per leaf": lambda: ro.Stack(
        ro.Adam(
            ro.hyper(1e-2, per="leaf"),
            b1=ro.hyper(0.9, per="leaf"),
            b2=ro.hyper(0.99, per="layer"),
        ),
        ro.Adam(1e-2),
        ro.SGD(1e-3),
    ),
}


@pytest.mark.parametrize("name", list(TOWERS))
def test_vectors_step_as_the_leaves_do(name, monkeypatch):
    # With tuned betas, op by op: at the first step their columns are 0 but for
    # rounding (bias correction undoes the betas there; the reference package's
    # autodiff rounds the same way), and a level above steps on that noise, so
    # two compiled programs that round differently part by far more than their
    # rounding (1e-5 against 1e-13 op by op, float32 and float64 leaves).
    eager = jax.disable_jit() if "betas" in name else contextlib.nullcontext()
    with eager:
        params, history, state = _run(TOWERS[name]())
        monkeypatch.setattr(_flat, "_ENABLED", False)
        leaf_params, leaf_history, leaf_state = _run(TOWERS[name]())
    # Level 2 holds its moments as a vector per dtype, not a value per leaf.
    assert len(jax.tree.leaves(state.states[1])) < len(
        jax.tree.leaves(leaf_state.states[1])
    )
    # The same arithmetic per value; only the chain's sums over values may add
    # in another order (float32 rounding, over 12 steps; op by op, less).
    rtol, atol = (1e-9, 1e-12) if "betas" in name else (1e-5, 1e-7)
    chex.assert_trees_all_close(params, leaf_params, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(history, leaf_history, rtol=rtol, atol=atol)


def _equations(tower, layers: int) -> int:
    params = _model(layers)
    state = tower.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    return len(jax.make_jaxpr(tower.update)(grads, state, params).eqns)


def test_upper_levels_do_not_grow_with_the_leaves():
    """Each leaf adds its own level-1 work (its hypergradient's contraction, its
    lr's value) whatever the lr's `per`; stepped leaf by leaf, the upper levels
    added 4.8x what one lr for the model adds per leaf, as vectors 1.6x."""
    per_layer = ro.Stack[3](ro.Adam())
    one_lr = ro.Stack[3](ro.Adam(ro.hyper(1e-2, bounds=(None, 1.0))))
    grows = _equations(per_layer, 16) - _equations(per_layer, 8)
    grows_one = _equations(one_lr, 16) - _equations(one_lr, 8)
    assert grows <= 2 * grows_one, (grows, grows_one)


def _scalar_transcendentals(tower, layers: int) -> int:
    """How many exp, log, log1p and logistic equations on scalars the update's
    jaxpr holds, sub-jaxprs included."""
    params = _model(layers)
    state = tower.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    names = {"exp", "log", "log1p", "logistic"}

    def count(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in names and eqn.outvars[0].aval.shape == ():
                n += 1
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                n += count(sub)
        return n

    return count(jax.make_jaxpr(tower.update)(grads, state, params).jaxpr)


def test_level_ones_values_are_vectors_too():
    """Level 1's one lr per layer is a value per leaf; its transform (the value,
    and its derivative in the chain), its bounds and the state's view of it run
    on all those values as one vector (`_hyper.map_scalars`): no transcendental
    per leaf, which XLA would compile (and an accelerator launch) as a kernel of
    its own."""
    tower = ro.Stack[3](ro.Adam())
    assert _scalar_transcendentals(tower, 16) == _scalar_transcendentals(tower, 8)


def test_map_scalars_is_tree_map_on_vectors():
    """`map_scalars` of an elementwise function equals `jax.tree.map` of it, in
    each leaf's dtype, with one call per dtype under a trace."""
    tree = {
        "a": jnp.float32(0.3),
        "b": jnp.float64(-1.7),
        "c": jnp.float32(2.5),
        "d": jnp.float64(0.9),
        "e": jnp.float32(-0.4),
    }
    other = {k: jnp.asarray(0.5 + i, x.dtype) for i, (k, x) in enumerate(tree.items())}

    def fn(r, v):
        return jnp.where(v > 1.0, jnp.exp(r) * v, jnp.log1p(v) - r)

    expected = jax.tree.map(fn, tree, other)
    got = jax.jit(lambda t, o: map_scalars(fn, t, o))(tree, other)
    for k in tree:
        assert got[k].dtype == expected[k].dtype == tree[k].dtype
        # Bit for bit on a CPU; a GPU's fused kernel may round the product's
        # last bit differently from its kernel alone.
        eps = 0 if jax.default_backend() == "cpu" else jnp.finfo(tree[k].dtype).eps
        np.testing.assert_allclose(got[k], expected[k], rtol=2 * eps, err_msg=k)
    jaxpr = jax.make_jaxpr(lambda t, o: map_scalars(fn, t, o))(tree, other)
    exps = [e for e in jaxpr.eqns if e.primitive.name == "exp"]
    assert [e.outvars[0].aval.shape for e in exps] == [(3,), (2,)]
    eager = map_scalars(fn, tree, other)  # leaf by leaf
    assert all(eager[k] == expected[k] for k in tree)
