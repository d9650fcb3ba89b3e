"""ro.fit: the scanned loop against hand-written loops, history, models, the guard."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import recursive_opt as ro
from recursive_opt._loop import batch_indices

from .helpers import copies, x64

QUAD = ro.make_quadratic(dim=6, n=96, n_test=32, seed=1)

# jax 0.6's persistent compilation cache (the suite's, conftest.py) returns
# wrong executables for optax.lbfgs's line search (a hand loop ends at 0.047
# instead of 0.0169, then at 0 once cached); jax 0.7 does not.
_LBFGS = pytest.mark.skipif(
    tuple(int(v) for v in jax.__version__.split(".")[:2]) < (0, 7),
    reason="jax 0.6's compilation cache and optax.lbfgs",
)


def linear_loss(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def linear_params():
    return {"w": jnp.zeros(6, jnp.float32), "b": jnp.zeros([], jnp.float32)}


def batches(n_batches, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x, y = QUAD.train
    for _ in range(n_batches):
        idx = rng.choice(len(x), size, replace=False)
        yield x[idx], y[idx]


def test_arrays_are_sampled_in_reshuffled_epochs_without_replacement():
    # loss = -sum_i w[id_i]: SGD(lr=1) adds one to w[id] for every example drawn.
    n, batch = 40, 8
    ids = np.arange(n)

    def loss(p, b):
        return -jnp.sum(p["w"][b])

    p = {"w": jnp.zeros(n)}
    sgd = ro.SGD(ro.hyper(1.0, transform="identity"))
    for epochs in (1, 3):
        res = ro.fit(
            loss,
            p,
            sgd,
            ids,
            steps=epochs * n // batch,
            batch_size=batch,
            progress=False,
            log_every=3,
        )
        np.testing.assert_array_equal(res.params["w"], epochs)
    key, impl = jr.key_data(jr.key(0)), jr.key_impl(jr.key(0))
    idx = np.asarray(batch_indices(key, impl, 0, 15, n, batch))
    epochs = idx.reshape(3, n)
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), ids)
    assert not np.array_equal(epochs[0], epochs[1])
    # Chunks starting mid-epoch continue the same order.
    later = np.asarray(batch_indices(key, impl, 7, 8, n, batch))
    np.testing.assert_array_equal(later, idx[7:])


def test_fit_matches_a_hand_written_loop():
    tower = ro.Stack[2](ro.Adam(0.05))
    res = ro.fit(
        linear_loss,
        linear_params(),
        tower,
        batches(30),
        steps=30,
        log_every=7,
        progress=False,
    )
    params, state = linear_params(), tower.init(linear_params())

    @jax.jit
    def step(params, state, b):
        grads = jax.grad(linear_loss)(params, b)
        updates, state = tower.update(grads, state, params)
        return ro.apply_updates(params, updates), state

    for b in batches(30):
        params, state = step(params, state, b)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    for a, b in zip(ro.hyperparams(res.state), ro.hyperparams(state)):
        chex.assert_trees_all_close(a["lr"], b["lr"], rtol=1e-5)
    assert res.step == 30 and res.skipped == 0


def test_history_records_every_level_and_eval():
    tower = copies(3, ro.SGD(0.05, momentum=0.5))
    res = ro.fit(
        lambda p, b: (linear_loss(p, b), {"pred": jnp.mean(b[0] @ p["w"])}),
        linear_params(),
        tower,
        QUAD.train,
        steps=25,
        batch_size=16,
        log_every=10,
        has_aux=True,
        eval_data=QUAD.test,
        progress=False,
    )
    h = res.history
    np.testing.assert_array_equal(h["step"], [10, 20, 25])
    assert h["loss"].shape == (3,) and h["loss"][-1] < h["loss"][0]
    for level in (1, 2, 3):
        assert h[f"level{level}/lr"].shape == (3,)
        assert h[f"level{level}/momentum"].shape == (3,)
    final = ro.hyperparams(res.state)
    for level in range(3):
        np.testing.assert_allclose(h[f"level{level + 1}/lr"][-1], final[level]["lr"])
    np.testing.assert_allclose(
        h["eval"][-1], linear_loss(res.params, QUAD.test), rtol=1e-5
    )
    assert h["aux['pred']"].shape == (3,)
    np.testing.assert_array_equal(h["skipped"], 0)
    assert np.isfinite(res.ms_per_step)
    # A summary, not the arrays: what a notebook prints.
    text = repr(res)
    assert text.startswith("FitResult(step=25, skipped=0, loss=")
    assert f"{h['loss'][-1]:.4g}" in text and "'level3/lr'" in text
    assert "Array" not in text and len(text) < 600


def test_a_second_run_of_the_same_loss_and_tower_compiles_nothing():
    # The chunks are cached on everything but the arrays: the hyperparameters'
    # values, the parameters' and the data's are arguments, not constants.
    traced = []

    def loss(p, b):
        traced.append(1)
        return linear_loss(p, b)

    def run(lr, loss_fn=loss, w=0.0, **kwargs):
        params = {"w": jnp.full(6, w, jnp.float32), "b": jnp.zeros([], jnp.float32)}
        tower = ro.Stack(ro.SGD(lr, momentum=0.5), ro.SGD(0.01, momentum=0.5))
        options = dict(steps=12, log_every=4, progress=False, eval_data=QUAD.test)
        return ro.fit(loss_fn, params, tower, QUAD.train, **(options | kwargs))

    first = run(1e-3)
    assert traced
    n = len(traced)
    second = run(5e-2, w=0.3)
    assert len(traced) == n  # nothing traced again
    # It ran with its own values: a fresh loss function compiles anew, and agrees.
    fresh = run(5e-2, lambda p, b: linear_loss(p, b), w=0.3)
    for k in fresh.history:
        np.testing.assert_allclose(second.history[k], fresh.history[k], err_msg=k)
    chex.assert_trees_all_close(second.params, fresh.params)
    assert not np.allclose(first.history["level1/lr"], second.history["level1/lr"])
    assert not np.allclose(first.params["w"], second.params["w"])
    # What changes the traced program compiles it: here the batch size.
    run(1e-3, batch_size=8)
    assert len(traced) > n


@pytest.mark.filterwarnings("ignore:A JAX array is being set as static")
def test_a_loss_module_with_an_array_in_a_static_field_still_runs():
    # Its compiled chunks cannot be looked up (arrays do not compare as one
    # value), so each run compiles its own.
    class Loss(eqx.Module):
        scale: np.ndarray = eqx.field(static=True)

        def __call__(self, p, b):
            return linear_loss(p, b) * self.scale[0]

    runs = [
        ro.fit(
            Loss(np.ones(2)),
            linear_params(),
            ro.Adam(1e-2),
            QUAD.train,
            steps=6,
            log_every=3,
            progress=False,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].history["loss"], runs[1].history["loss"])
    assert runs[0].history["loss"][-1] < runs[0].history["loss"][0]


def test_per_leaf_history_and_optax_transformations():
    res = ro.fit(
        linear_loss,
        linear_params(),
        ro.Stack[2](ro.SGD(ro.hyper(0.1, per="leaf"))),
        QUAD.train,
        steps=5,
        batch_size=16,
        log_every=5,
        progress=False,
    )
    assert set(k for k in res.history if k.startswith("level1/lr")) == {
        "level1/lr['b']",
        "level1/lr['w']",
    }
    inject = optax.inject_hyperparams(optax.adam)(learning_rate=0.01)
    res = ro.fit(
        linear_loss,
        linear_params(),
        inject,
        QUAD.train,
        steps=5,
        batch_size=16,
        log_every=5,
        progress=False,
    )
    np.testing.assert_allclose(res.history["level1/learning_rate"], [0.01])
    res = ro.fit(
        linear_loss,
        linear_params(),
        optax.sgd(0.1),
        QUAD.train,
        steps=5,
        batch_size=16,
        log_every=5,
        progress=False,
    )
    assert not any(k.startswith("level") for k in res.history)


def test_caller_params_survive_donation():
    params = linear_params()
    params["w"] = params["w"] + 1.0
    ro.fit(
        linear_loss,
        params,
        ro.Adam(0.1),
        QUAD.train,
        steps=4,
        batch_size=16,
        progress=False,
    )
    np.testing.assert_array_equal(params["w"], 1.0)  # still alive and unchanged


def test_equinox_module(getkey):
    class Net(eqx.Module):
        mlp: eqx.nn.MLP
        scale: jax.Array  # an integer array: kept, not trained
        name: str = "net"

        def __call__(self, x):
            return jax.vmap(self.mlp)(x).squeeze(-1) * self.scale

    net = Net(eqx.nn.MLP(6, 1, 8, 1, key=getkey()), jnp.array(1, jnp.int32))

    def loss(model, batch):
        return jnp.mean((model(batch[0]) - batch[1]) ** 2)

    res = ro.fit(
        loss,
        net,
        ro.Stack[2](ro.Adam(0.01)),
        QUAD.train,
        steps=60,
        batch_size=32,
        log_every=20,
        progress=False,
    )
    assert isinstance(res.params, Net) and res.params.name == "net"
    assert res.params.scale.dtype == jnp.int32
    assert loss(res.params, QUAD.train) < 0.5 * loss(net, QUAD.train)


@pytest.mark.parametrize(
    "tower",
    [
        ro.Stack[2](ro.Adam(0.01)),
        # Schemes that linearise the loss, and a line search that evaluates it,
        # batch statistics and all:
        ro.Stack[2](ro.Adam(0.01), hypergradient=ro.RealTime(0.9)),
        ro.Stack[2](ro.Adam(0.01), hypergradient=ro.Unrolled(3)),
        pytest.param(optax.lbfgs(), marks=_LBFGS),
    ],
    ids=["tower", "RealTime", "Unrolled", "lbfgs"],
)
def test_flax_nnx_module_with_batch_statistics(tower):
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin1 = nnx.Linear(6, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.lin2 = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.lin2(jnp.tanh(self.bn(self.lin1(x)))).squeeze(-1)

    net = Net(nnx.Rngs(0))
    before = np.asarray(net.lin1.kernel[...])

    def loss(model, batch):
        return jnp.mean((model(batch[0]) - batch[1]) ** 2)

    # optax 0.2.4's line search mixes float32 and float64 with x64 on.
    with x64(not isinstance(tower, optax.GradientTransformation)):
        res = ro.fit(
            loss,
            net,
            tower,
            tuple(np.asarray(a, np.float32) for a in QUAD.train),
            steps=40,
            batch_size=32,
            log_every=20,
            progress=False,
        )
    assert isinstance(res.params, Net)
    np.testing.assert_array_equal(net.lin1.kernel[...], before)  # input untouched
    assert not np.allclose(res.params.bn.mean[...], 0)  # batch statistics carried
    if isinstance(tower, ro.Stack) and isinstance(tower.hypergradient, ro.OneStep):
        assert "level1/lr['lin1']['kernel']" in res.history  # one lr per layer
    assert res.history["loss"][-1] < res.history["loss"][0]


def test_iterator_that_ends_early_warns_and_keeps_the_work(capsys):
    with pytest.warns(UserWarning, match="ended after 12 steps"):
        res = ro.fit(
            linear_loss,
            linear_params(),
            ro.SGD(0.05),
            batches(12),
            steps=20,
            log_every=5,
            desc="run",
        )
    assert res.step == 12
    np.testing.assert_array_equal(res.history["step"], [5, 10, 12])
    bar = capsys.readouterr().err  # the progress bar: step, loss and level-1 lr
    assert "run:" in bar and "12/20" in bar and "loss=" in bar and "lr=0.05" in bar


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"steps": 5, "batch_size": 1000}, "batch_size must be"),
        (
            {"steps": 5, "log_every": 3, "checkpoint_dir": "x", "checkpoint_every": 4},
            "multiple of log_every",
        ),
        ({"steps": 5, "on_nonfinite": "retry"}, "on_nonfinite must be one of"),
        ({"steps": 5, "bounds": {"lrr": (0, 1)}}, "'lrr' is not a hyperparameter"),
        ({"steps": 5, "bounds": {"lr": (1, 0.1)}}, "low < high"),
    ],
)
def test_fit_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ro.fit(
            linear_loss,
            linear_params(),
            ro.SGD(0.1),
            QUAD.train,
            progress=False,
            **kwargs,
        )


def test_fit_rejects_what_is_not_data_or_an_optimiser():
    with pytest.raises(TypeError, match="data must be arrays"):
        ro.fit(
            linear_loss, linear_params(), ro.SGD(0.1), [1, 2], steps=2, progress=False
        )
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        ro.fit(
            linear_loss, linear_params(), "adam", QUAD.train, steps=2, progress=False
        )


@pytest.mark.parametrize(
    "loss_fn, has_aux, match",
    [
        (
            lambda p, b: (linear_loss(p, b), {}),
            False,
            r"returned a tuple of 2; .* with has_aux=True",
        ),
        (linear_loss, True, r"must return a pair \(loss, aux\); it returned one value"),
        (lambda p, b: (linear_loss(p, b),), True, r"it returned a tuple of 1"),
        (
            lambda p, b: (b[0] @ p["w"] - b[1]) ** 2,
            False,
            r"scalar loss; it returned shape \(16,\)",
        ),
        (
            lambda p, b: ((b[0] @ p["w"]), 0.0),
            True,
            r"scalar loss; it returned shape \(16,\)",
        ),
    ],
)
def test_fit_says_what_is_wrong_with_a_loss(loss_fn, has_aux, match):
    with pytest.raises(TypeError, match=match):
        ro.fit(
            loss_fn,
            linear_params(),
            ro.SGD(0.1),
            QUAD.train,
            steps=2,
            batch_size=16,
            has_aux=has_aux,
            progress=False,
        )


def _plateau():
    return optax.chain(
        optax.sgd(0.3),
        optax.contrib.reduce_on_plateau(
            factor=0.5, patience=2, rtol=0.05, accumulation_size=1
        ),
    )


@pytest.mark.parametrize(
    "make, reads",
    [
        (_plateau, ("value",)),
        pytest.param(
            optax.lbfgs, ("value", "grad", "value_fn"), marks=_LBFGS
        ),  # its line search
        (optax.contrib.prodigy, ()),  # its state holds the starting parameters
        (lambda: optax.MultiSteps(optax.adam(0.05), 2), ()),  # a class of its own
    ],
    ids=["reduce_on_plateau", "lbfgs", "prodigy", "MultiSteps"],
)
def test_optax_transformations_as_a_hand_loop_runs_them(make, reads):
    # optax 0.2.4's line search mixes float32 and float64 with x64 on.
    with x64(make is not optax.lbfgs):
        _fit_against_a_hand_loop(make, reads)


def _fit_against_a_hand_loop(make, reads):
    # Full batches, so that a hand loop sees the same losses (the batch's order
    # aside), given as optax's conventions pass them.
    x, y = (jnp.asarray(a) for a in QUAD.train)
    res = ro.fit(
        linear_loss,
        linear_params(),
        make(),
        (x, y),
        steps=30,
        batch_size=len(x),
        log_every=10,
        progress=False,
    )
    tx = make()
    tx = tx.gradient_transformation() if isinstance(tx, optax.MultiSteps) else tx

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(linear_loss)(params, (x, y))
        fn = lambda p: linear_loss(p, (x, y))  # noqa: E731
        extra = {"value": value, "grad": grads, "value_fn": fn}
        extra = {k: v for k, v in extra.items() if k in reads}
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    params, state = linear_params(), tx.init(linear_params())
    for _ in range(30):
        params, state = step(params, state)
    start = linear_loss(linear_params(), (x, y))
    assert linear_loss(res.params, (x, y)) < 0.9 * start  # it trained
    chex.assert_trees_all_close(res.params, params, rtol=1e-4, atol=1e-6)
    if make is _plateau:
        assert state[1].scale < 1  # the plateau was reached and the steps scaled
        chex.assert_trees_all_close(res.state[1].scale, state[1].scale)


def test_only_aliased_state_arrays_are_copied_for_donation():
    from recursive_opt._optax import unaliased

    a, b, p = jnp.ones(3), jnp.zeros(3), jnp.full(3, 2.0)
    out = unaliased({"m": a, "v": a, "p0": p, "n": b, "k": 3}, {"w": p})
    assert out["m"] is a and out["n"] is b and out["k"] == 3  # kept, no copy
    assert out["v"] is not a and out["p0"] is not p  # an alias, a parameter
    chex.assert_trees_all_equal(out, {"m": a, "v": a, "p0": p, "n": b, "k": 3})
