"""Hypergradient schemes (RealTime, Unrolled) against brute-force autodiff of the
whole trajectory, written in plain JAX (tests/helpers.py)."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt._hyper import tuned_raw

from .helpers import plain, plain_init, plain_raw, plain_update

T = 5
UPPER_LR = 0.05  # level 2: plain SGD on level 1's raw values, raw -= UPPER_LR * G


def _loss(p, x, y):
    logits = x @ p["w"] + p["b"]
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)


def _problem(n_batches):
    key = jax.random.key(0)
    kx, ky, kw = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n_batches, 6, 4))
    y = (jax.random.uniform(ky, (n_batches, 6)) < 0.5).astype(jnp.float64)
    params = {"w": 0.3 * jax.random.normal(kw, (4,)), "b": jnp.zeros(())}
    return params, [(x[i], y[i]) for i in range(n_batches)]


LEVEL1 = ro.Adam(0.05)  # lr, b1 and b2 tuned: three tangents, two through the state


def _tower(scheme, level1=LEVEL1, warmup=0):
    return ro.Stack(level1, ro.SGD(UPPER_LR), hypergradient=scheme, warmup=warmup)


_STEP = jax.jit(lambda tower, p, s, x, y: tower.step(_loss, p, s, x, y))


def _run(tower, steps, params, batches):
    """Each step's level-1 raw values (those it used) and the final state."""
    state = tower.init(params)
    raws = []
    for t in range(steps):
        params, state, _ = _STEP(tower, params, state, *batches[t])
        raws.append(tuned_raw(state.opts[0]))
    return params, state, raws


def _trajectory(level1, params, batches, raws, eps, upto, decay, curvature, warmup=0):
    """θ_upto with each step s's raw values moved by decay**(upto-1-s) * eps, and
    step t multiplied by min(1, (t + 1) / warmup) when warmup > 0."""
    opt = plain(level1)
    _, fixed = plain_raw(opt, params)
    theta, s = params, plain_init(opt, params)
    for t in range(upto):
        r = {n: raws[t][n] + decay ** (upto - 1 - t) * eps[n] for n in eps}
        at = theta if curvature else jax.lax.stop_gradient(theta)
        g = jax.grad(_loss)(at, *batches[t])
        u, s = plain_update(opt, {**r, **fixed}, g, s, theta)
        ramp = min(1.0, (t + 1) / warmup) if warmup else 1.0
        theta = jax.tree.map(lambda a, b: a + ramp * b, theta, u)
    return theta


@pytest.mark.parametrize(
    "decay, curvature, warmup",
    [(1.0, True, 0), (0.6, True, 0), (0.6, False, 0), (1.0, True, 3), (0.6, False, 3)],
)
def test_real_time_equals_brute_force_over_the_whole_trajectory(
    decay, curvature, warmup
):
    """Z = dθ/dh after every step equals jax.jacfwd of the trajectory, with the
    hyperparameters each step used (they change), μ decaying old steps and the
    tower's warm-up scaling the first steps; the level above steps on exactly
    ⟨g, Z⟩."""
    params, batches = _problem(T)
    tower = _tower(ro.RealTime(decay=decay, curvature=curvature), warmup=warmup)
    _, state, raws = _run(tower, T, params, batches)
    zero = jax.tree.map(jnp.zeros_like, raws[0])

    def theta(eps, upto):
        return _trajectory(
            LEVEL1, params, batches, raws, eps, upto, decay, curvature, warmup
        )

    # The tangent the tower carries after the last step.
    brute = jax.jacfwd(lambda e: theta(e, T))(zero)
    z = state.saved[0].params
    for n in zero:
        expected = [brute[k][n] for k in sorted(brute)]  # the leaves' order
        chex.assert_trees_all_close(z[n], expected, rtol=1e-10, atol=1e-14)
    # Every hypergradient the level above stepped on: raw_t = raw_t-1 - lr2 * G_t.
    for t in range(1, T):
        g = jax.grad(lambda e: _loss(theta(e, t), *batches[t]))(zero)
        step = jax.tree.map(lambda a, b: (a - b) / -UPPER_LR, raws[t], raws[t - 1])
        chex.assert_trees_all_close(step, g, rtol=1e-8, atol=1e-14)
    # The test is not vacuous: every tangent is far from 0, and lr and b1 moved.
    assert all(max(np.max(np.abs(a)) for a in z[n]) > 1e-7 for n in zero)
    assert all(abs(raws[-1][n] - raws[0][n]) > 1e-5 for n in ("lr", "b1"))


def test_real_time_without_decay_is_one_step_bitwise():
    params, batches = _problem(T)
    runs = [
        _run(_tower(scheme), T, params, batches)
        for scheme in (ro.RealTime(decay=0.0), ro.OneStep())
    ]
    (p0, s0, r0), (p1, s1, r1) = runs
    chex.assert_trees_all_equal((p0, r0), (p1, r1))
    chex.assert_trees_all_equal(ro.hyperparams(s0), ro.hyperparams(s1))


_META_STEP = jax.jit(
    lambda tower, p, s, x, y, meta: tower.step(_loss, p, s, x, y, meta_batch=meta)
)


@pytest.mark.parametrize("held_out", [False, True])
def test_unrolled_equals_grad_through_each_window_by_hand(held_out):
    """Every k steps, level 1's raw values move by -lr2 times jax.grad (reverse
    mode) of the mean loss after each of the window's steps (on each step's
    batch, or on a held-out batch stream); in between they and the level above
    hold still."""
    k = 3
    params, batches = _problem(2 * k + 1)
    _, held = _problem(2 * (2 * k + 1))
    meta = held[2 * k + 1 :] if held_out else batches
    opt = plain(LEVEL1)
    _, fixed = plain_raw(opt, params)
    tower = _tower(ro.Unrolled(k))
    state, p, raws = tower.init(params), params, []
    for t in range(2 * k + 1):
        if held_out:
            p, state, _ = _META_STEP(tower, p, state, *batches[t], meta[t])
        else:
            p, state, _ = _STEP(tower, p, state, *batches[t])
        raws.append(tuned_raw(state.opts[0]))

    def window(h, theta, s, start):
        losses = []
        for t in range(start, start + k):
            g = jax.grad(_loss)(theta, *batches[t])
            u, s = plain_update(opt, {**h, **fixed}, g, s, theta)
            theta = jax.tree.map(jnp.add, theta, u)
            losses.append(_loss(theta, *meta[t + 1]))
        return jnp.mean(jnp.stack(losses)), (theta, s)

    theta, s = params, plain_init(opt, params)
    h = raws[0]
    for w in range(2):
        for t in range(w * k, (w + 1) * k):  # fixed within the window
            chex.assert_trees_all_equal(raws[t], h)
        grad, (theta, s) = jax.grad(window, has_aux=True)(h, theta, s, w * k)
        h = jax.tree.map(lambda a, b: a - UPPER_LR * b, h, grad)
        chex.assert_trees_all_close(raws[(w + 1) * k], h, rtol=1e-10, atol=1e-13)
    assert all(abs(raws[-1][n] - raws[0][n]) > 1e-5 for n in ("lr", "b1"))


def test_one_step_on_a_held_out_batch_follows_its_loss():
    """With meta_batch, the one-step hypergradient is d L_meta(θ_t) / d log-lr
    through the last step: -lr * <g_meta(θ_t), g_t-1> for SGD."""
    params, batches = _problem(2)
    held = _problem(3)[1][2]
    tower = ro.Stack(ro.SGD(0.1), ro.SGD(UPPER_LR))
    state = tower.init(params)
    g0 = jax.grad(_loss)(params, *batches[0])
    p1, state, _ = _META_STEP(tower, params, state, *batches[0], held)
    p1_plain = jax.tree.map(lambda a, b: a - 0.1 * b, params, g0)
    chex.assert_trees_all_close(p1, p1_plain, rtol=1e-12)
    _, state, _ = _META_STEP(tower, p1, state, *batches[1], held)
    g_meta = jax.grad(_loss)(p1, *held)
    dot = sum(
        jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_meta), jax.tree.leaves(g0))
    )
    expected = jnp.log(0.1) - UPPER_LR * (-0.1 * dot)
    np.testing.assert_allclose(tuned_raw(state.opts[0])["lr"], expected, rtol=1e-12)
    g_train = jax.grad(_loss)(p1, *batches[1])
    other = sum(
        jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_train), jax.tree.leaves(g0))
    )
    assert abs(other - dot) > 1e-3 * abs(dot)  # the held-out batch made a difference


SCHEMES = [
    ro.OneStep(),
    ro.RealTime(0.9),
    ro.RealTime(0.9, curvature=False),
    ro.Unrolled(2),
    ro.OneStep(fused=True),
]
SCHEME_IDS = [
    "one_step",
    "real_time",
    "real_time_no_curvature",
    "unrolled",
    "one_step_fused",
]


@pytest.mark.parametrize("scheme", SCHEMES, ids=SCHEME_IDS)
def test_each_scheme_traces_once_and_vmaps_over_initial_hyperparameters(scheme):
    params, batches = _problem(3)
    traces = []

    def loss(p, x, y):
        traces.append(None)
        return _loss(p, x, y)

    def train(lr):
        tower = ro.Stack[2](ro.Adam(lr), hypergradient=scheme)
        p, state = params, tower.init(params)
        for x, y in batches:
            p, state, _ = tower.step(loss, p, state, x, y)
        return p, ro.hyperparams(state)[0]["lr"]

    tower = ro.Stack[2](ro.Adam(0.01), hypergradient=scheme)
    step = jax.jit(tower.step, static_argnums=0)
    p, state = params, tower.init(params)
    p, state, _ = step(loss, p, state, *batches[0])
    once = len(traces)
    for x, y in batches[1:]:
        p, state, _ = step(loss, p, state, x, y)
    assert once > 0 and len(traces) == once

    lrs = jnp.array([1e-3, 0.1])
    together = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate(lrs):
        alone = train(lr)
        chex.assert_trees_all_close(
            jax.tree.map(lambda a: a[i], together), alone, rtol=1e-10
        )
    assert not np.isclose(jax.tree.leaves(together[1])[0][0], 1e-3)  # the lr moved


def test_schemes_needing_the_loss_refuse_update_and_name_step():
    params, _ = _problem(1)
    for scheme in (ro.RealTime(0.9), ro.Unrolled(3)):
        tower = ro.Stack[2](ro.Adam(), hypergradient=scheme)
        state = tower.init(params)
        with pytest.raises(ValueError, match=r"tower\.step\(loss_fn"):
            tower.update(params, state, params)
    # Without curvature, gradients are enough.
    tower = ro.Stack[2](ro.Adam(), hypergradient=ro.RealTime(0.9, curvature=False))
    tower.update(params, tower.init(params), params)


def test_scheme_arguments_are_checked():
    with pytest.raises(ValueError, match="decay"):
        ro.RealTime(decay=1.5)
    with pytest.raises(ValueError, match="k >= 1"):
        ro.Unrolled(0)
    with pytest.raises(TypeError, match="hypergradient"):
        ro.Stack[2](ro.Adam(), hypergradient="real_time")
    per_leaf = ro.Adam(ro.hyper(0.01, per="leaf"))
    with pytest.raises(ValueError, match=r"^RealTime\(curvature=True\).*per='tree'"):
        ro.Stack(per_leaf, ro.Adam(0.1), hypergradient=ro.RealTime(0.9))
    ro.Stack(per_leaf, ro.Adam(0.1), hypergradient=ro.RealTime(0.9, curvature=False))
    per_layer = ro.Adam(ro.hyper(0.01, per="layer"))
    with pytest.raises(ValueError, match=r"^Unrolled\(5\) .*lr \(per='layer'\)"):
        ro.Stack(per_layer, ro.Adam(0.1), hypergradient=ro.Unrolled(5))
    with pytest.raises(TypeError, match="True or False"):
        ro.OneStep(fused="yes")
    with pytest.raises(ValueError, match="untied"):
        ro.Stack[3](ro.Adam(), tie=True, hypergradient=ro.OneStep(fused=True))


@pytest.mark.parametrize("scheme", SCHEMES[1:], ids=SCHEME_IDS[1:])
def test_each_scheme_in_fit_and_sweep_equals_a_hand_written_loop(scheme):
    params, batches = _problem(4)
    x = jnp.concatenate([b[0] for b in batches])
    y = jnp.concatenate([b[1] for b in batches])

    def loss(p, batch):
        return _loss(p, *batch)

    tower = ro.Stack[2](ro.Adam(0.01), hypergradient=scheme)
    res = ro.fit(
        loss, params, tower, (x, y), steps=4, batch_size=24, log_every=4, progress=False
    )
    p, state = params, tower.init(params)
    for _ in range(4):  # batch_size = n: every step sees the whole set
        p, state, _ = tower.step(_loss, p, state, x, y)
    chex.assert_trees_all_close(res.params, p, rtol=1e-10)
    swept = ro.sweep(
        loss,
        params,
        tower,
        (x, y),
        over={"lr": [0.01, 0.1]},
        steps=4,
        batch_size=24,
        log_every=4,
        progress=False,
    )
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[0], swept.params), p, rtol=1e-10
    )


def test_tied_real_time_without_decay_is_one_step_bitwise():
    params, batches = _problem(T)
    runs = [
        _run(ro.Stack[3](ro.Adam(0.05), tie=True, hypergradient=s), T, params, batches)
        for s in (ro.RealTime(decay=0.0), ro.OneStep())
    ]
    chex.assert_trees_all_equal(runs[0][0], runs[1][0])
    chex.assert_trees_all_equal(runs[0][2], runs[1][2])
    tower = ro.Stack[3](ro.Adam(0.05), tie=True, hypergradient=ro.RealTime(0.9))
    p, state, raws = _run(tower, T, params, batches)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves((p, raws)))
    assert abs(raws[-1]["lr"] - raws[0]["lr"]) > 1e-5


class _MeanLR(ro.AbstractOptimiser):
    """A rule that is not elementwise in its hyperparameter: every coordinate
    steps by the mean of a per-element lr (served by the generic VJP path)."""

    lr: ro.Hyper
    uses_params: bool = eqx.field(static=True)

    def __init__(self, lr):
        self.lr = ro.Hyper.declare(
            ro.hyper(lr, "identity", per="element"), "identity", owner="_MeanLR"
        )
        self.uses_params = False

    def init_state(self, params):
        return None

    def rule(self, grads, state, params, hp):
        lr = jnp.mean(
            jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(hp["lr"])])
        )
        return jax.tree.map(lambda g: -lr * g, grads), None


def test_a_rule_not_elementwise_in_its_hyperparameters_gets_its_exact_hypergradient():
    params, batches = _problem(3)
    tower = ro.Stack(_MeanLR(0.1), ro.SGD(UPPER_LR))
    state = tower.init(params)
    p0 = params
    g0 = jax.grad(_loss)(p0, *batches[0])
    p1, state, _ = _STEP(tower, p0, state, *batches[0])
    g1 = jax.grad(_loss)(p1, *batches[1])
    _, state, _ = _STEP(tower, p1, state, *batches[1])
    n = sum(np.size(a) for a in jax.tree.leaves(params))
    # d/d lr_j of loss(p0 - mean(lr) * g0) = -(g1 . g0) / n, for every j.
    dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)))
    expected = 0.1 + UPPER_LR * dot / n
    lr = ro.hyperparams(state)[0]["lr"]
    for leaf in jax.tree.leaves(lr):
        np.testing.assert_allclose(leaf, expected, rtol=1e-12)
    assert abs(dot) > 1e-3


@pytest.mark.parametrize(
    "scheme", [ro.OneStep(), ro.Unrolled(2)], ids=["one_step", "unrolled"]
)
def test_fit_and_sweep_with_meta_data_equal_a_hand_written_loop(scheme):
    params, batches = _problem(4)
    x = jnp.concatenate([b[0] for b in batches[:3]])
    y = jnp.concatenate([b[1] for b in batches[:3]])
    meta = batches[3]  # 6 held-out rows: every meta batch is all of them

    def loss(p, batch):
        return _loss(p, *batch)

    tower = ro.Stack[2](ro.Adam(0.01), hypergradient=scheme, warmup=2)
    options = dict(steps=4, batch_size=18, log_every=4, progress=False, meta_data=meta)
    res = ro.fit(loss, params, tower, (x, y), **options)
    p, state = params, tower.init(params)
    for _ in range(4):
        p, state, _ = tower.step(_loss, p, state, x, y, meta_batch=meta)
    chex.assert_trees_all_close(res.params, p, rtol=1e-10)
    # Without the held-out split the run differs: meta_data was used.
    plain_fit = ro.fit(loss, params, tower, (x, y), **{**options, "meta_data": None})
    assert not np.allclose(plain_fit.params["w"], p["w"], rtol=1e-9)
    swept = ro.sweep(loss, params, tower, (x, y), over={"lr": [0.01, 0.1]}, **options)
    chex.assert_trees_all_close(
        jax.tree.map(lambda a: a[0], swept.params), p, rtol=1e-10
    )


def test_meta_data_errors():
    params, batches = _problem(2)
    loss = lambda p, b: _loss(p, *b)  # noqa: E731
    with pytest.raises(TypeError, match="arrays"):
        ro.fit(
            loss,
            params,
            ro.Stack[2](ro.Adam()),
            batches[0],
            steps=1,
            progress=False,
            meta_data=iter([batches[1]]),
        )
    with pytest.raises(ValueError, match="depth >= 2"):
        ro.fit(
            loss,
            params,
            ro.Adam(),
            batches[0],
            steps=1,
            progress=False,
            meta_data=batches[1],
        )


def test_one_step_record_dtype_stores_rounded_columns_and_stays_close_to_exact():
    """`OneStep(record_dtype=bfloat16)`: Adam's stored columns are the exact
    path's, rounded; the trajectory stays close to the exact one, not equal."""
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.zeros(3)}

    def loss(p):
        return jnp.sum(jnp.sin(3 * p["w"]) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)

    def run(scheme, steps):
        # lr declared: no ceiling, which the lrs of this toy would reach by step 30
        lr = ro.hyper(0.05, per="leaf")
        tower = ro.Stack[2](ro.Adam(lr), hypergradient=scheme)
        traces = []

        @jax.jit
        def step(p, s):
            traces.append(None)
            updates, s = tower.update(jax.grad(loss)(p), s, p)
            return ro.apply_updates(p, updates), s

        p, s = params, tower.init(params)
        for _ in range(steps):
            p, s = step(p, s)
        assert len(traces) == 1
        return p, s

    bf16 = ro.OneStep(record_dtype=jnp.bfloat16)
    (p_exact, s_exact), (p_low, s_low) = run(ro.OneStep(), 1), run(bf16, 1)
    jac_exact, jac_low = s_exact.saved[0].record.jac, s_low.saved[0].record.jac
    assert all(j.dtype == jnp.bfloat16 for j in jax.tree.leaves(jac_low))
    chex.assert_trees_all_equal(
        jax.tree.map(lambda j: j.astype(jnp.bfloat16), jac_exact), jac_low
    )
    chex.assert_trees_all_equal(p_exact, p_low)  # the first hypergradient is 0

    (_, s_exact), (_, s_low) = run(ro.OneStep(), 30), run(bf16, 30)
    lr_exact, lr_low = (
        jax.tree.leaves(ro.hyperparams(s)[0]["lr"]) for s in (s_exact, s_low)
    )
    np.testing.assert_allclose(lr_low, lr_exact, rtol=2e-2)
    assert not np.allclose(lr_low, lr_exact, rtol=1e-9, atol=0)
    assert all(
        j.dtype == jnp.bfloat16 for j in jax.tree.leaves(s_low.saved[0].record.jac)
    )
    with pytest.raises(ValueError, match="floating"):
        ro.OneStep(record_dtype=jnp.int32)
    with pytest.raises(ValueError, match="at least 16 bits"):
        ro.OneStep(record_dtype=jnp.float8_e5m2)
