"""Levels above level 1 step the scalars below them (one lr per layer or per leaf)
as one vector per dtype (`recursive_opt._flat`): the numbers of stepping them leaf
by leaf, in a program whose upper levels do not grow with the model's leaves."""

import contextlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import recursive_opt as ro
from recursive_opt import _flat, _hyper
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


_TRANSCENDENTAL = re.compile(
    r"stablehlo\.(?:exponential|log|log_plus_one|logistic) %\S+ : tensor<f(?:16|32|64)>"
)


def _scalar_transcendentals(tower, layers: int, platform: str) -> int:
    """How many exp, log, log1p and logistic operations on scalars the update's
    program holds, lowered for `platform` (`jax.export` lowers for a platform
    this machine need not have)."""
    params = _model(layers)
    state = tower.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    exported = export.export(jax.jit(tower.update), platforms=[platform])(
        grads, state, params
    )
    return len(_TRANSCENDENTAL.findall(exported.mlir_module()))


def test_level_ones_values_are_vectors_on_a_cpu_only():
    """Level 1's one lr per layer is a value per leaf; its transform (the value,
    and its derivative in the chain), its bounds and the state's view of it run
    on all those values as one vector (`_hyper.map_scalars`) in a program for a
    CPU: no transcendental per leaf, which XLA:CPU would compile as a loop of its
    own. A program for a GPU keeps them per leaf (its XLA fuses each into the
    kernels that read it; stacked, the fused order's update needed a pass more)."""
    tower = ro.Stack[3](ro.Adam())
    cpu = [_scalar_transcendentals(tower, n, "cpu") for n in (8, 16)]
    assert cpu[0] == cpu[1], cpu
    gpu = [_scalar_transcendentals(tower, n, "cuda") for n in (8, 16)]
    assert gpu[1] - gpu[0] >= 8 * 3, gpu  # the value, its derivative, its bound


def test_map_scalars_is_tree_map_on_vectors(monkeypatch):
    """`map_scalars` of an elementwise function equals `jax.tree.map` of it, in
    each leaf's dtype, both branches; under a trace one call per dtype in a
    program for a CPU, one per leaf in a program for a GPU."""
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
    # The stacked branch, whatever this machine's platform.
    monkeypatch.setattr(_hyper, "_STACKED", True)
    stacked = jax.jit(lambda t, o: map_scalars(fn, t, o))(tree, other)
    for k in tree:
        eps = 0 if jax.default_backend() == "cpu" else jnp.finfo(tree[k].dtype).eps
        np.testing.assert_allclose(stacked[k], expected[k], rtol=2 * eps, err_msg=k)
    monkeypatch.setattr(_hyper, "_STACKED", None)
    exps = {}
    for platform in ("cpu", "cuda"):
        f = jax.jit(lambda t, o: map_scalars(fn, t, o))
        text = export.export(f, platforms=[platform])(tree, other).mlir_module()
        exps[platform] = re.findall(
            r"stablehlo\.exponential %\S+ : (tensor<\w+>)", text
        )
    # One call per dtype for a CPU, one per leaf elsewhere.
    assert exps["cpu"] == ["tensor<3xf32>", "tensor<2xf64>"], exps
    assert sorted(exps["cuda"]) == ["tensor<f32>"] * 3 + ["tensor<f64>"] * 2, exps
    eager = map_scalars(fn, tree, other)  # leaf by leaf
    assert all(eager[k] == expected[k] for k in tree)
