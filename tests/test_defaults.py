"""`Stack[d](opt)`: the library's default levels above `opt` (tuning-free towers)."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import recursive_opt as ro
from recursive_opt._hyper import hyper_fields
from recursive_opt._loop import mean_lr

from .helpers import PROBLEMS, brute_force_untied

quadratic = PROBLEMS[0]


def _tuned(opt):
    return {n for n, h in hyper_fields(opt).items() if h.tune}


def test_default_levels():
    tower = ro.Stack[4](ro.Adam(1e-3))
    bottom, *upper = tower.levels
    assert _tuned(bottom) == {"lr"}
    assert float(bottom.b1.value) == pytest.approx(0.9)  # fixed, value kept
    assert all(isinstance(o, ro.Adam) and _tuned(o) == {"lr"} for o in upper)
    lrs = [float(o.lr.value) for o in upper]
    np.testing.assert_allclose(lrs, [0.1, 0.01, 0.01], rtol=1e-6)
    assert [float(o.b2.value) for o in upper] == pytest.approx([0.99] * 3)
    # Level 2's momentum is 0.5 over an adaptive level 1 with OneStep, else 0.9.
    assert [float(o.b1.value) for o in upper] == pytest.approx([0.5, 0.9, 0.9])
    sgd_tower = ro.Stack[3](ro.SGD(0.1, momentum=0.9))
    sgd, *sgd_upper = sgd_tower.levels
    assert _tuned(sgd) == {"lr"} and float(sgd.momentum.value) == pytest.approx(0.9)
    assert [float(o.b1.value) for o in sgd_upper] == pytest.approx([0.9, 0.9])
    # Raises bounded (the normalised step clipped below at -2), cuts free, over
    # an adaptive level 1 with OneStep only.
    assert [o.clip for o in upper] == [(-2.0, None)] * 3
    assert [o.clip for o in sgd_upper] == [None, None]
    # After its 100th step level 2's raises gated by the signal's certainty, and
    # after its 300th its cuts by a test of a 100-step mean (one standard
    # error), in the same case only.
    assert [o.gate for o in upper] == [(0.9, 100, 1.0, 300), None, None]
    assert [o.gate for o in sgd_upper] == [None, None]
    # The levels do not depend on a warm-up the user gives.
    for warmup in (0, 30, 300):
        given = ro.Stack[4](ro.Adam(1e-3), warmup=warmup)
        assert given.warmup == warmup and eqx.tree_equal(given.levels, tower.levels)
    # An adaptive level 1's undeclared lr is bounded above by 1 or its start, in
    # the same case only.
    assert bottom.lr.bounds == (None, 1.0)
    # (the start read back through exp(log(3)): equal to rounding)
    low, high = ro.Stack[3](ro.Adam(3.0)).levels[0].lr.bounds
    assert low is None and high == pytest.approx(3.0, rel=1e-12)
    assert ro.Stack[3](ro.RMSProp()).levels[0].lr.bounds == (None, 1.0)
    assert sgd.lr.bounds is None
    assert ro.Stack[3](ro.Adam(ro.hyper(1e-3))).levels[0].lr.bounds is None
    rt = ro.Stack[2](ro.Adam(), hypergradient=ro.RealTime(0.9)).levels[1]
    assert float(rt.b1.value) == pytest.approx(0.9) and rt.clip is None
    assert rt.gate is None
    assert (
        ro.Stack[2](ro.Adam(), hypergradient=ro.RealTime(0.9)).levels[0].lr.bounds
        is None
    )


def test_declared_hyperparameters_stay_tuned():
    opt = ro.Adam(1e-3, b1=ro.hyper(0.9), eps=ro.hyper(1e-8, tune=True))
    assert _tuned(ro.Stack[2](opt).levels[0]) == {"lr", "b1", "eps"}
    with pytest.raises(ValueError, match="level 2 has nothing to tune"):
        ro.Stack[2](ro.Adam(ro.fixed(1e-3)))


def test_depth_one_tied_and_explicit_towers_keep_their_levels():
    opt = ro.Adam(1e-3)
    assert ro.Stack[1](opt).levels == (opt,)
    assert ro.Stack[3](opt, tie=True).levels == (opt,) * 3
    explicit = ro.Stack(opt, opt)
    assert explicit.levels == (opt, opt) and _tuned(explicit.levels[0]) == {
        "lr",
        "b1",
        "b2",
    }


def test_level_1_learning_rate_is_one_per_layer_unless_declared_or_another_scheme():
    def per(tower):
        return tower.levels[0].lr.per

    assert per(ro.Stack[3](ro.Adam(1e-3))) == "layer"
    assert per(ro.Stack[3](ro.RMSProp(1e-3))) == "layer"
    assert per(ro.Stack[2](ro.SGD(0.1, momentum=0.9))) == "leaf"  # not adaptive
    assert per(ro.Stack[2](ro.Adam(), hypergradient=ro.OneStep())) == "layer"
    assert per(ro.Stack[2](ro.Adam(ro.hyper(1e-3)))) == "tree"  # declared: kept
    assert per(ro.Stack[2](ro.Adam(ro.hyper(1e-3, per="leaf")))) == "leaf"
    assert per(ro.Stack[2](ro.Adam(ro.hyper(1e-3, per="element")))) == "element"
    assert per(ro.Stack[2](ro.Adam(), hypergradient=ro.RealTime(0.9))) == "tree"
    assert per(ro.Stack[3](ro.Adam(), tie=True)) == "tree"  # tied: opt itself
    assert per(ro.Stack(ro.Adam(), ro.Adam())) == "tree"  # explicit: as given


def test_an_adam_lr_not_given_starts_the_default_tower_at_1e_2():
    def lr(tower):
        return float(tower.levels[0].lr.value)

    # Alone, Adam() is optax's Adam at 1e-3, step for step.
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
    opt, tx = ro.Adam(), optax.adam(1e-3)
    state, ref_state = opt.init(params), tx.init(params)
    for t in range(3):
        grads = jax.tree.map(lambda p: jnp.sin(p * (t + 2)), params)
        updates, state = opt.update(grads, state, params)
        ref, ref_state = tx.update(grads, ref_state, params)
        chex.assert_trees_all_close(updates, ref, rtol=1e-12)
        params = optax.apply_updates(params, updates)
    # The tuning-free default starts it at 1e-2 (an adaptive rule under OneStep).
    assert lr(ro.Stack[3](ro.Adam())) == pytest.approx(1e-2)
    assert lr(ro.Stack[2](ro.Adam(b1=ro.hyper(0.9)))) == pytest.approx(1e-2)
    assert lr(ro.Stack[2](ro.Adam(), hypergradient=ro.OneStep())) == pytest.approx(1e-2)
    # A given lr, declared or not, and every other tower keep 1e-3.
    assert lr(ro.Stack[3](ro.Adam(1e-3))) == pytest.approx(1e-3)
    assert lr(ro.Stack[3](ro.Adam(ro.hyper(1e-3)))) == pytest.approx(1e-3)
    assert lr(ro.Stack[2](ro.Adam(), hypergradient=ro.RealTime(0.9))) == pytest.approx(
        1e-3
    )
    assert lr(ro.Stack[3](ro.Adam(), tie=True)) == pytest.approx(1e-3)
    # Not given or given as 1e-3: the same level, so the two can be tied.
    assert lr(ro.Stack(ro.Adam(), ro.Adam(1e-3), tie=True)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="identical levels"):
        ro.Stack(ro.Adam(), ro.Adam(1e-2), tie=True)
    assert lr(ro.Stack(ro.Adam(), ro.Adam())) == pytest.approx(1e-3)
    assert lr(ro.Stack[1](ro.Adam())) == pytest.approx(1e-3)
    # SGD's default is 1e-2 already; a given lr is kept.
    assert lr(ro.Stack[3](ro.SGD(momentum=0.9))) == pytest.approx(1e-2)
    assert lr(ro.Stack[3](ro.SGD(0.1, momentum=0.9))) == pytest.approx(0.1)


def test_history_has_one_level_1_lr_per_leaf_and_mean_lr_is_their_geometric_mean():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    x = jr.normal(jr.key(0), (32, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 3.0

    def loss(p, batch):
        return jnp.mean((batch[0] @ p["w"] + p["b"] - batch[1]) ** 2)

    res = ro.fit(
        loss,
        params,
        ro.Stack[2](ro.Adam(1e-2)),
        (x, y),
        steps=40,
        batch_size=8,
        log_every=10,
        progress=False,
    )
    h = res.history
    assert sorted(k for k in h if k.startswith("level1/lr")) == [
        "level1/lr['b']",
        "level1/lr['w']",
    ]
    assert not np.allclose(h["level1/lr['b']"], h["level1/lr['w']"])  # they differ
    np.testing.assert_allclose(
        mean_lr(h), np.sqrt(h["level1/lr['b']"] * h["level1/lr['w']"]), rtol=1e-6
    )
    np.testing.assert_array_equal(mean_lr(h, 2), h["level2/lr"])  # one: itself
    assert mean_lr(h, 3) is None
    signed = {
        "level1/lr['a']": np.array([-1.0, 4.0]),
        "level1/lr['b']": np.array([3.0, 1.0]),
    }
    np.testing.assert_allclose(mean_lr(signed), [1.0, 2.5])  # not positive: the mean


@pytest.mark.parametrize(
    "level1", [ro.Adam(0.05), ro.SGD(0.05, momentum=0.9)], ids=["adam", "sgd_momentum"]
)
@pytest.mark.parametrize("warmup", [None, (4, "linear"), (4, "geometric")])
def test_default_tower_matches_brute_force(warmup, level1):
    """The default levels (fixed betas below, Adam with b2 = 0.99 above, level 1's
    step warmed up) through the same chain as every tower: checked against step
    t-1 written out by hand, with the ramp still rising (the default's 100 steps,
    300 for SGD) and after it ends (4). SGD's level 1 keeps no record: its
    learning rate's column is recomputed from the momentum buffer."""
    tower = ro.Stack[3](level1)
    assert tower.warmup == (300 if isinstance(level1, ro.SGD) else 100)
    if warmup is not None:
        tower = ro.Stack(*tower.levels, warmup=warmup[0], warmup_shape=warmup[1])
    x = quadratic.init(None)
    state = tower.init(x)
    for _ in range(6):
        updates, state = tower.update(jax.grad(quadratic.loss)(x), state, x)
        x = ro.apply_updates(x, updates)
    kind = "FromState" if isinstance(level1, ro.SGD) else "Jacobian"
    assert type(state.saved[0].record).__name__ == kind
    bf_x, bf_hs, bf_G = brute_force_untied(
        list(tower.levels),
        quadratic.loss,
        quadratic.init(None),
        6,
        tower.warmup,
        shape=tower.warmup_shape,
    )
    chex.assert_trees_all_close(x, bf_x, rtol=1e-9, atol=1e-12)
    # Level 1's lr is one per layer (Adam) or per leaf (SGD), kept per leaf (a list
    # of the leaves inside the tower); each of the quadratic's arrays is a layer.
    assert len(jax.tree.leaves(state.opts[0].lr.raw)) == len(jax.tree.leaves(x))
    raw = [jax.tree.leaves(o.lr.raw) for o in state.opts[:-1]]
    bf_raw = [jax.tree.leaves(h["lr"]) for h in bf_hs]
    chex.assert_trees_all_close(raw, bf_raw, rtol=1e-9)
    assert all(np.any(np.abs(g) > 0) for g in jax.tree.leaves(bf_G))


# A small classifier: a tanh MLP on four Gaussian classes, minibatches of 64.
_DATA = ro.make_gaussian_mixture(dim=16, classes=4, n=1024, separation=3.0, seed=0)


def _params(key):
    k1, k2 = jr.split(key)
    return {
        "w1": jr.normal(k1, (16, 32)) / 4,
        "b1": jnp.zeros(32),
        "w2": jr.normal(k2, (32, 4)) / jnp.sqrt(32),
        "b2": jnp.zeros(4),
    }


def _loss(p, x, y):
    hidden = jnp.tanh(x @ p["w1"] + p["b1"][None])
    logits = hidden @ p["w2"] + p["b2"][None]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _final_losses(make_tx, lrs, steps=300):
    """Final whole-train-set loss from each initial lr, one vmapped program."""
    x, y = (jnp.asarray(a) for a in _DATA.train)
    params0 = _params(jr.key(0))

    def one(lr):
        tx = make_tx(lr)

        def body(carry, key):
            params, state = carry
            idx = jr.randint(key, (64,), 0, len(x))
            grads = jax.grad(_loss)(params, x[idx], y[idx])
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        init = (params0, tx.init(params0))
        (params, _), _ = jax.lax.scan(body, init, jr.split(jr.key(1), steps))
        return _loss(params, x, y)

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(lrs)))


def test_default_towers_train_from_any_initial_lr():
    """From lr 1e-5 and from lr 1, the default towers reach a quarter of the
    initial loss (ln 4); plain Adam started there does not."""
    threshold = np.log(4) / 4
    lrs = [1e-5, 1.0]
    plain = _final_losses(optax.adam, lrs)
    assert np.all(plain > threshold)
    for depth in (2, 3):
        tower = _final_losses(lambda lr: ro.Stack[depth](ro.Adam(lr)).as_optax(), lrs)
        assert np.all(tower < threshold), (depth, tower)
    # SGD with momentum: from 1e-5 (at lr 1 plain SGD-momentum trains too).
    sgd = _final_losses(lambda lr: optax.sgd(lr, momentum=0.9), lrs[:1])
    sgd_tower = _final_losses(
        lambda lr: ro.Stack[3](ro.SGD(lr, momentum=0.9)).as_optax(), lrs[:1]
    )
    assert sgd[0] > threshold > sgd_tower[0]


def test_default_upper_level_bounds_raises_of_the_lr_not_cuts():
    """Over Adam, level 2 raises each log-lr by at most 0.2 a step (its lr 0.1
    times the bound 2 on its normalised step) and the bound binds on the climb
    from 1e-5; it cuts by more than 0.2 in some step (cuts are free)."""
    x, y = (jnp.asarray(a) for a in _DATA.train)
    tower, params0 = ro.Stack[2](ro.Adam(1e-5)), _params(jr.key(0))

    def body(carry, key):
        params, state = carry
        idx = jr.randint(key, (64,), 0, len(x))
        updates, state = tower.update(
            jax.grad(_loss)(params, x[idx], y[idx]), state, params
        )
        raw = jnp.stack(jax.tree.leaves(state.opts[0].lr.raw))
        return (optax.apply_updates(params, updates), state), raw

    init = (params0, tower.init(params0))
    _, raws = jax.jit(lambda: jax.lax.scan(body, init, jr.split(jr.key(1), 150)))()
    steps = np.diff(np.asarray(raws), axis=0)
    assert steps.max() == pytest.approx(0.2, rel=1e-9)
    assert -steps.min() > 0.25


def test_default_tower_raises_no_lr_above_1_or_its_start():
    """On a linear loss the one-step signal says "raise" every step: the default
    tower's lrs climb to their ceiling, 1 (or a higher start, traced or not), and
    stay there, while a declared lr (no ceiling) climbs past it."""
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    grads = {"w": -jnp.ones(3), "b": -jnp.ones(())}  # of -sum(params)

    def lrs(tower, steps=150):
        def body(state, _):
            _, state = tower.update(grads, state, params)
            return state, jnp.stack(jax.tree.leaves(ro.hyperparams(state)[0]["lr"]))

        return jax.lax.scan(body, tower.init(params), None, steps)[1]

    def run(tower):
        return np.asarray(jax.jit(lambda: lrs(tower))())

    default = run(ro.Stack[2](ro.Adam(0.1)))
    assert default.max() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(default[-1], 1.0, rtol=1e-6)
    assert np.all(np.diff(default[:10], axis=0) > 0)  # it was climbing
    high = run(ro.Stack[2](ro.Adam(3.0)))
    assert high.max() == pytest.approx(3.0, rel=1e-6)
    traced = jax.jit(jax.vmap(lambda lr: lrs(ro.Stack[2](ro.Adam(lr)))))(
        jnp.array([0.1, 3.0])
    )
    assert np.asarray(traced).max() == pytest.approx(1.0, rel=1e-6)  # ceiling 1
    declared = run(ro.Stack[2](ro.Adam(ro.hyper(0.1, per="leaf"))))
    assert declared[-1].min() > 2.0


@pytest.mark.parametrize("shape", ["linear", "geometric"])
def test_warmup_is_the_default_towers_and_scales_level_1s_first_steps(shape):
    assert ro.Stack[3](ro.Adam()).warmup == 100
    assert ro.Stack[3](ro.RMSProp()).warmup == 100  # adaptive: bounded steps
    assert ro.Stack[2](ro.SGD(0.1, momentum=0.9)).warmup == 300
    assert ro.Stack[3](ro.SGD(0.1), warmup=50).warmup == 50
    fused, real_time = ro.OneStep(fused=True), ro.RealTime(0.9)
    assert ro.Stack[2](ro.SGD(0.1), hypergradient=fused).warmup == 300
    assert ro.Stack[2](ro.SGD(0.1), hypergradient=real_time).warmup == 100
    assert ro.Stack[1](ro.SGD(0.1)).warmup == 0
    assert ro.Stack[1](ro.Adam()).warmup == 0
    assert ro.Stack[3](ro.Adam(), tie=True).warmup == 0
    assert ro.Stack(ro.Adam(), ro.Adam()).warmup == 0
    assert ro.Stack[3](ro.Adam(), warmup=20).warmup == 20
    assert ro.Stack[3](ro.Adam(), warmup=0).warmup == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="warmup"):
            ro.Stack(ro.Adam(), ro.Adam(), warmup=bad)
    with pytest.raises(ValueError, match="warmup_shape"):
        ro.Stack(ro.Adam(), ro.Adam(), warmup=4, warmup_shape="cosine")
    assert ro.Stack[3](ro.Adam(), warmup_shape=shape).warmup_shape == shape
    # By default geometric for adaptive rules under OneStep, linear otherwise.
    assert ro.Stack[3](ro.Adam()).warmup_shape == "geometric"
    assert ro.Stack[3](ro.Adam(), hypergradient=fused).warmup_shape == "geometric"
    assert ro.Stack[3](ro.RMSProp()).warmup_shape == "geometric"
    assert ro.Stack[3](ro.SGD(0.1, momentum=0.9)).warmup_shape == "linear"
    assert ro.Stack[3](ro.Adam(), hypergradient=real_time).warmup_shape == "linear"
    assert ro.Stack(ro.Adam(), ro.Adam(), warmup=4).warmup_shape == "linear"
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.1, -2.0])}
    plain, _ = ro.Adam(0.1).update(grads, ro.Adam(0.1).init(params))
    # From 1/4 to 1 in four steps: by equal steps, or by the same ratio (sqrt 2).
    factors = {
        "linear": [0.25, 0.5, 0.75, 1, 1, 1],
        "geometric": [2**-1.5, 0.5, 2**-0.5, 1, 1, 1],
    }[shape]
    for depth in (1, 2):
        tower = ro.Stack(*[ro.Adam(0.1)] * depth, warmup=4, warmup_shape=shape)
        state = tower.init(params)
        for t in range(6):  # the same gradients: Adam's update stays the same
            updates, state = tower.update(grads, state, params)
            if depth == 1:
                np.testing.assert_allclose(
                    updates["w"], factors[t] * plain["w"], rtol=1e-12
                )
        assert np.all(np.isfinite(updates["w"]))
