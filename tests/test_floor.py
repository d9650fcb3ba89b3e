"""`ro.DistanceFloor`: level 1's lrs kept at least a tenth of prodigy's estimate,
until a gradient spike."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import recursive_opt as ro

N, BATCH, STEPS, SPIKE_AT = 256, 4, 160, 130


def _problem():
    x = jr.normal(jr.key(0), (N, 6))
    y = jnp.sin(x @ jr.normal(jr.key(1), (6,))) + 0.3 * jr.normal(jr.key(2), (N,))
    params = {
        "w1": jr.normal(jr.key(5), (6, 16)) / 2.5,
        "b1": jnp.zeros(16),
        "w2": jr.normal(jr.key(6), (16,)) / 4,
    }

    def loss_fn(p, xb, yb):
        h = jnp.tanh(xb @ p["w1"] + p["b1"][None])
        return jnp.mean((h @ p["w2"] - yb) ** 2)

    return x, y, params, loss_fn


def _batches(steps=STEPS):
    return jr.randint(jr.key(3), (steps, BATCH), 0, N)


def _lrs(tower_state):
    return optax.tree_utils.tree_get(tower_state, "lr", filtering=ro.at_level(1))


def _scale(t):  # the gradients fed in: a spike of 1000x at SPIKE_AT
    return 1e3 if t == SPIKE_AT else 1.0


@pytest.fixture(scope="module")
def runs():
    """The same gradients (a spike at SPIKE_AT) through `DistanceFloor.update`
    and through a loop around `Stack.update` beside `optax.contrib.prodigy`
    (its estimate, its own step discarded) that applies the rule as the
    docstring states it, the guard in NumPy."""
    x, y, params, loss_fn = _problem()
    stack = ro.Stack[3](ro.Adam(1e-4))
    floor = ro.DistanceFloor(stack)
    grad = jax.jit(jax.grad(loss_fn))

    @jax.jit
    def lib_step(p, s, g):
        u, new = floor.update(g, s, p)
        _, own = stack.update(g, s.tower, p)  # the tower's lrs before the floor
        return optax.apply_updates(p, u), new, _lrs(own)

    p, s = params, floor.init(params)
    lib = {"lrs": [], "own": [], "estimate": [], "on": []}
    for t, i in enumerate(_batches()):
        g = jax.tree.map(lambda a, t=t: a * _scale(t), grad(p, x[i], y[i]))
        p, s, own = lib_step(p, s, g)
        lib["lrs"].append(jax.tree.map(np.asarray, _lrs(s.tower)))
        lib["own"].append(jax.tree.map(np.asarray, own))
        lib["estimate"].append(float(s.estimate))
        lib["on"].append(float(s.on))
    lib["params"], lib["state"] = p, s

    prodigy = optax.contrib.prodigy()
    update = jax.jit(stack.update)
    p, ts, ps = params, stack.init(params), prodigy.init(params)
    mean, low, on = 0.0, math.inf, 1.0
    hand = {"lrs": [], "estimate": [], "on": []}
    for t, i in enumerate(_batches()):
        g = jax.tree.map(lambda a, t=t: a * _scale(t), grad(p, x[i], y[i]))
        u, ts = update(g, ts, p)
        _, ps = prodigy.update(g, ps, p)
        norm = math.sqrt(sum(float(jnp.sum(a**2)) for a in jax.tree.leaves(g)))
        mean = 0.9 * mean + 0.1 * norm
        if t >= 100:
            low = min(low, mean)
        if mean > 10 * low:
            on = 0.0
        f = on * min(0.1 * float(ps.estim_lr), 1.0)
        lrs = jax.tree.map(lambda lr, f=f: jnp.maximum(lr, f), _lrs(ts))
        ts = optax.tree_utils.tree_set(ts, ro.at_level(1), lr=lrs)
        p = optax.apply_updates(p, u)
        hand["lrs"].append(jax.tree.map(np.asarray, lrs))
        hand["estimate"].append(float(ps.estim_lr))
        hand["on"].append(on)
    hand["params"] = p
    return lib, hand


def test_the_estimate_is_prodigys(runs):
    lib, hand = runs
    np.testing.assert_allclose(lib["estimate"], hand["estimate"], rtol=1e-10)
    assert lib["estimate"][-1] > 100 * 1e-6  # it grew from its start


def test_the_floor_follows_its_rule(runs):
    lib, hand = runs
    assert lib["on"] == hand["on"]
    for a, b in zip(lib["lrs"], hand["lrs"]):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), a, b)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13),
        lib["params"],
        hand["params"],
    )


def test_the_floor_acts_until_the_spike(runs):
    lib, _ = runs
    assert lib["on"][SPIKE_AT - 1] == 1.0 and lib["on"][SPIKE_AT] == 0.0
    raised = 0
    for t, (lrs, own) in enumerate(zip(lib["lrs"], lib["own"])):
        for a, b in zip(jax.tree.leaves(lrs), jax.tree.leaves(own)):
            if t < SPIKE_AT:  # at the floor or above it, never below the tower's
                floor = 0.1 * lib["estimate"][t]
                assert np.all(a >= b) and np.all(a >= floor * (1 - 1e-12))
                raised += int(np.any(a > b))
            else:  # gone: the tower's own lrs
                np.testing.assert_array_equal(a, b)
    assert raised >= 20  # the floor bites on this run (43 leaf-steps of 390)


def test_non_finite_gradients_leave_the_estimate(runs):
    lib, _ = runs
    x, y, params, loss_fn = _problem()
    floor = ro.DistanceFloor(ro.Stack[3](ro.Adam(1e-4)))
    state = lib["state"]
    g = jax.tree.map(lambda a: a * jnp.nan, jax.grad(loss_fn)(lib["params"], x, y))
    _, after = floor.update(g, state, lib["params"])
    for name in ("numerator", "estimate", "mean", "low", "on"):
        np.testing.assert_array_equal(getattr(after, name), getattr(state, name))
    jax.tree.map(np.testing.assert_array_equal, after.grad_sum, state.grad_sum)


def test_fit_sweep_and_a_resumed_fit(tmp_path):
    """`ro.fit` ends where `DistanceFloor.step` on the same batches ends, a
    resumed fit bit for bit where an uninterrupted one does, and `ro.sweep`'s
    members where separate fits do."""
    x, y, params, loss_fn = _problem()
    floor = ro.DistanceFloor(ro.Stack[3](ro.Adam(1e-4)))
    loss = lambda p, b: loss_fn(p, *b)  # noqa: E731
    batches = [(x[i], y[i]) for i in _batches(steps=80)]
    res = ro.fit(loss, params, floor, iter(batches), steps=80, log_every=40,
                 progress=False)  # fmt: skip
    step = jax.jit(lambda p, s, xb, yb: floor.step(loss_fn, p, s, xb, yb))
    p, s = params, floor.init(params)
    for xb, yb in batches:
        p, s, _ = step(p, s, xb, yb)
    np.testing.assert_allclose(float(res.state.estimate), float(s.estimate), rtol=1e-8)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12),
        res.params,
        p,
    )
    assert "level1/lr['w1']" in res.history

    how = dict(batch_size=4, log_every=40, progress=False)
    ck = dict(checkpoint_dir=str(tmp_path), checkpoint_every=40)
    whole = ro.fit(loss, params, floor, (x, y), steps=120, **how)
    ro.fit(loss, params, floor, (x, y), steps=80, **how, **ck)
    resumed = ro.fit(loss, params, floor, (x, y), steps=120, **how, **ck)
    jax.tree.map(np.testing.assert_array_equal, resumed.params, whole.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.state, whole.state)

    lrs = np.array([1e-4, 1e-1])
    out = ro.sweep(loss, params, floor, (x, y), over={"lr": lrs}, steps=80, **how)
    assert out.state.estimate.shape == (2,)
    for k, lr in enumerate(lrs):
        one = ro.fit(
            loss, params, ro.DistanceFloor(ro.Stack[3](ro.Adam(lr))), (x, y),
            steps=80, **how,
        )  # fmt: skip
        np.testing.assert_allclose(out.state.estimate[k], one.state.estimate, rtol=1e-8)
        np.testing.assert_allclose(
            out.params["w2"][k], one.params["w2"], rtol=1e-8, atol=1e-12
        )


def test_as_optax_in_a_chain():
    x, y, params, loss_fn = _problem()
    floor = ro.DistanceFloor(ro.Stack[3](ro.Adam(1e-4)))
    chain = optax.chain(optax.clip_by_global_norm(1.0), floor.as_optax())
    clip = optax.clip_by_global_norm(1.0)

    @jax.jit
    def both(p, s1, s2, xb, yb):
        g = jax.grad(loss_fn)(p, xb, yb)
        u1, s1 = chain.update(g, s1, p, value=1.0)  # extra arguments pass
        u2, s2 = floor.update(clip.update(g, clip.init(g))[0], s2, p)
        return optax.apply_updates(p, u1), u1, u2, s1, s2

    p, s1, s2 = params, chain.init(params), floor.init(params)
    for i in _batches(steps=40):
        p, u1, u2, s1, s2 = both(p, s1, s2, x[i], y[i])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), u1, u2)
    assert float(s1[1].estimate) > 1e-6
    with pytest.raises(ValueError, match="reads the parameters"):
        chain.update(jax.grad(loss_fn)(params, x, y), s1)


def test_errors_name_the_fix():
    x, y, params, loss_fn = _problem()
    floor = ro.DistanceFloor(ro.Stack[2](ro.Adam()))
    state = floor.init(params)
    g = jax.grad(loss_fn)(params, x, y)
    with pytest.raises(ValueError, match="DistanceFloor.init"):
        floor.update(g, ro.Stack[2](ro.Adam()).init(params), params)
    with pytest.raises(TypeError, match="wraps a tower"):
        ro.DistanceFloor(ro.Adam())
    with pytest.raises(ValueError, match="depth >= 2"):
        ro.DistanceFloor(ro.Stack[1](ro.Adam()))
    with pytest.raises(ValueError, match="untied"):
        ro.DistanceFloor(ro.Stack[3](ro.Adam(1e-2), tie=True))
    with pytest.raises(ValueError, match="per element"):
        ro.DistanceFloor(ro.Stack[2](ro.Adam(ro.hyper(1e-2, per="element"))))
    with pytest.raises(ValueError, match="no tuned `lr`"):
        ro.DistanceFloor(ro.Stack[2](ro.Adam(ro.fixed(1e-2), b1=ro.hyper(0.9))))
    with pytest.raises(ValueError, match="adaptive"):
        ro.DistanceFloor(ro.Stack[2](ro.SGD(1e-2, momentum=0.9)))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="fraction"):
            ro.DistanceFloor(ro.Stack[2](ro.Adam()), fraction=bad)
    for bad in (1.0, 0.5, math.nan):
        with pytest.raises(ValueError, match="spike"):
            ro.DistanceFloor(ro.Stack[2](ro.Adam()), spike=bad)
    with pytest.raises(TypeError, match="number"):
        ro.DistanceFloor(ro.Stack[2](ro.Adam()), fraction="0.1")
    assert ro.DistanceFloor(ro.Stack[2](ro.Adam()), spike=math.inf).spike == math.inf
    assert isinstance(eqx.filter_jit(floor.init)(params), ro.DistanceFloorState)
    assert repr(state).endswith("count=0, estimate=1e-06, floor=on)")
