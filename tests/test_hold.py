"""`ro.HoldCuts`: level 1's cuts held while the batch loss falls and is noisy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import recursive_opt as ro

N, BATCH, STEPS, START, RATIO = 256, 4, 160, 20, 2.0


def _problem():
    x = jr.normal(jr.key(0), (N, 6))
    y = x @ jr.normal(jr.key(1), (6,)) + 0.5 * jr.normal(jr.key(2), (N,))
    params = {"w": jnp.zeros(6), "b": jnp.zeros(())}

    def loss_fn(p, xb, yb):
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)

    return x, y, params, loss_fn


def _batches(batch=BATCH, steps=STEPS):
    idx = jr.randint(jr.key(3), (steps, batch), 0, N)
    return idx


def _level1_lrs(tower_state):
    return optax.tree_utils.tree_get(tower_state, "lr", filtering=ro.at_level(1))


@pytest.fixture(scope="module")
def runs():
    """The same batches through `HoldCuts.update` and through a hand-written loop
    around `Stack.update` that applies the rule as its docstring states it."""
    x, y, params, loss_fn = _problem()
    stack = ro.Stack[3](ro.Adam())
    held = ro.HoldCuts(stack, ratio=RATIO, start=START)
    grad = jax.jit(jax.value_and_grad(loss_fn))

    @jax.jit
    def lib_step(p, s, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        u, s = held.update(g, s, p, value=loss)
        return optax.apply_updates(p, u), s

    p, s = params, held.init(params)
    lib = {"held": [], "lrs": [], "averages": []}
    for i in _batches():
        p, s = lib_step(p, s, x[i], y[i])
        lib["held"].append(int(s.held))
        lib["averages"].append((float(s.noise), float(s.signal)))
        lib["lrs"].append(jax.tree.map(np.asarray, _level1_lrs(s.tower)))
    lib["params"], lib["state"] = p, s

    # By hand, in float64 NumPy for the averages (the rule, not its code).
    p, ts = params, stack.init(params)
    short = long = last = pred = noise = signal = 0.0
    hand = {"held": [], "lrs": [], "averages": []}
    count = 0
    update = jax.jit(stack.update)
    for t, i in enumerate(_batches()):
        loss, g = grad(p, x[i], y[i])
        loss = float(loss)
        u, new = update(g, ts, p)
        short = 0.98 * short + 0.02 * loss
        long = 0.995 * long + 0.005 * loss
        if t > 0:
            noise = 0.99 * noise + 0.01 * (loss - last - pred) ** 2
            signal = 0.99 * signal + 0.01 * pred**2
        falling = short / (1 - 0.98 ** (t + 1)) < long / (1 - 0.995 ** (t + 1))
        hold = falling and noise > RATIO * signal and t >= START
        if hold:
            old, lrs = _level1_lrs(ts), _level1_lrs(new)
            kept = jax.tree.map(jnp.maximum, old, lrs)
            new = optax.tree_utils.tree_set(new, ro.at_level(1), lr=kept)
            count += 1
        pred = float(
            sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(u)))
        )
        last = loss
        p, ts = optax.apply_updates(p, u), new
        hand["held"].append(count)
        hand["averages"].append((noise, signal))
        hand["lrs"].append(jax.tree.map(np.asarray, _level1_lrs(ts)))
    hand["params"] = p

    # The tower alone on the same batches.
    p, ts = params, stack.init(params)
    for i in _batches():
        loss, g = grad(p, x[i], y[i])
        u, ts = update(g, ts, p)
        p = optax.apply_updates(p, u)
    plain = {"params": p, "lrs": jax.tree.map(np.asarray, _level1_lrs(ts))}
    return lib, hand, plain


def test_hold_cuts_follows_its_rule(runs):
    lib, hand, plain = runs
    # The rule acts on this noisy problem, from `start` on only.
    assert lib["held"][START - 1] == 0 and lib["held"][-1] > 10
    assert lib["held"] == hand["held"]
    # The noise ratio's two averages: the rule's prediction, step by step.
    np.testing.assert_allclose(lib["averages"], hand["averages"], rtol=1e-4)
    for a, b in zip(lib["lrs"], hand["lrs"]):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), a, b)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        lib["params"],
        hand["params"],
    )
    # ... and changes the run: the lrs end higher than the tower's own.
    assert all(
        np.all(a > b)
        for a, b in zip(jax.tree.leaves(lib["lrs"][-1]), jax.tree.leaves(plain["lrs"]))
    )


def test_held_steps_never_cut(runs):
    lib, _, _ = runs
    for t in range(1, STEPS):
        if lib["held"][t] > lib["held"][t - 1]:
            for a, b in zip(
                jax.tree.leaves(lib["lrs"][t - 1]), jax.tree.leaves(lib["lrs"][t])
            ):
                assert np.all(b >= a)


def test_a_deterministic_problem_is_left_alone():
    x, y, params, loss_fn = _problem()
    stack = ro.Stack[3](ro.Adam())
    held = ro.HoldCuts(stack, start=0)
    p1, s1 = params, stack.init(params)
    p2, s2 = params, held.init(params)
    step1 = jax.jit(lambda p, s: stack.step(loss_fn, p, s, x, y))
    step2 = jax.jit(lambda p, s: held.step(loss_fn, p, s, x, y))
    for _ in range(300):
        p1, s1, _ = step1(p1, s1)
        p2, s2, _ = step2(p2, s2)
    assert int(s2.held) == 0
    # Two compiled programs: equal to float64 rounding.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)  # noqa: E731
    jax.tree.map(close, p1, p2)
    jax.tree.map(close, ro.hyperparams(s1), ro.hyperparams(s2))


def test_fit_passes_the_loss():
    """`ro.fit` on an iterator of batches ends where `HoldCuts.step` on the same
    batches ends, and `ro.sweep` runs a population of held towers."""
    x, y, params, loss_fn = _problem()
    held = ro.HoldCuts(ro.Stack[3](ro.Adam()), ratio=RATIO, start=START)
    batches = [(x[i], y[i]) for i in _batches(steps=80)]
    res = ro.fit(
        lambda p, b: loss_fn(p, *b), params, held, iter(batches), steps=80,
        log_every=40, progress=False,
    )  # fmt: skip
    step = jax.jit(lambda p, s, xb, yb: held.step(loss_fn, p, s, xb, yb))
    p, s = params, held.init(params)
    for xb, yb in batches:
        p, s, _ = step(p, s, xb, yb)
    assert int(res.state.held) == int(s.held) > 0
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        res.params,
        p,
    )
    assert "level1/lr['w']" in res.history
    bounded = ro.fit(
        lambda p, b: loss_fn(p, *b), params, held, iter(batches), steps=80,
        log_every=40, progress=False, bounds=[{"lr": (1e-8, 0.05)}, None, None],
    )  # fmt: skip
    assert int(bounded.state.held) > 0
    assert np.all(bounded.history["level1/lr['w']"] <= 0.05 * (1 + 1e-6))

    # A sweep's members are held towers too, each as its own fit.
    lrs = np.array([1e-3, 1e-1])
    how = dict(steps=80, batch_size=4, log_every=40, progress=False)
    out = ro.sweep(
        lambda p, b: loss_fn(p, *b), params, held, (x, y), over={"lr": lrs}, **how
    )
    assert out.state.held.shape == (2,)
    for k, lr in enumerate(lrs):
        tower = ro.HoldCuts(ro.Stack[3](ro.Adam(lr)), ratio=RATIO, start=START)
        one = ro.fit(lambda p, b: loss_fn(p, *b), params, tower, (x, y), **how)
        assert int(out.state.held[k]) == int(one.state.held) > 0
        np.testing.assert_allclose(
            out.params["w"][k], one.params["w"], rtol=1e-5, atol=1e-7
        )


def test_a_resumed_fit_ends_bit_identical(tmp_path):
    x, y, params, loss_fn = _problem()
    held = ro.HoldCuts(ro.Stack[3](ro.Adam()), ratio=RATIO, start=START)
    how = dict(batch_size=4, log_every=40, progress=False)
    ck = dict(checkpoint_dir=str(tmp_path), checkpoint_every=40)
    loss = lambda p, b: loss_fn(p, *b)  # noqa: E731
    whole = ro.fit(loss, params, held, (x, y), steps=120, **how)
    ro.fit(loss, params, held, (x, y), steps=80, **how, **ck)
    resumed = ro.fit(loss, params, held, (x, y), steps=120, **how, **ck)
    assert int(resumed.state.held) == int(whole.state.held) > 0
    jax.tree.map(np.testing.assert_array_equal, resumed.params, whole.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.state, whole.state)


def test_as_optax_takes_value_in_a_chain():
    x, y, params, loss_fn = _problem()
    held = ro.HoldCuts(ro.Stack[3](ro.Adam()), ratio=RATIO, start=START)
    chain = optax.chain(optax.clip_by_global_norm(1.0), held.as_optax())
    clip = optax.clip_by_global_norm(1.0)

    @jax.jit
    def both(s1, s2, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb)
        u1, s1 = chain.update(g, s1, params, value=loss)
        u2, s2 = held.update(clip.update(g, clip.init(g))[0], s2, params, value=loss)
        return u1, u2, s1, s2

    s1, s2 = chain.init(params), held.init(params)
    for i in _batches(steps=40):
        u1, u2, s1, s2 = both(s1, s2, x[i], y[i])  # equal up to float64 rounding
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), u1, u2)
    g = jax.grad(loss_fn)(params, x, y)
    with pytest.raises(ValueError, match="needs the batch loss"):
        chain.update(g, s1, params)


def test_a_non_finite_loss_leaves_the_averages(runs):
    lib, _, _ = runs
    x, y, params, loss_fn = _problem()
    held = ro.HoldCuts(ro.Stack[3](ro.Adam()), ratio=RATIO, start=START)
    state = lib["state"]
    g = jax.grad(loss_fn)(lib["params"], x[:4], y[:4])
    _, after = held.update(g, state, lib["params"], value=jnp.nan)
    for name in ("count", "short", "long", "last", "pred", "noise", "signal", "held"):
        np.testing.assert_array_equal(getattr(after, name), getattr(state, name))


def test_errors_name_the_fix():
    x, y, params, loss_fn = _problem()
    held = ro.HoldCuts(ro.Stack[2](ro.Adam()))
    state = held.init(params)
    g = jax.grad(loss_fn)(params, x, y)
    with pytest.raises(ValueError, match="value=loss"):
        held.update(g, state, params)
    with pytest.raises(ValueError, match="scalar"):
        held.update(g, state, params, value=jnp.ones(3))
    with pytest.raises(ValueError, match="HoldCuts.init"):
        held.update(g, ro.Stack[2](ro.Adam()).init(params), params, value=1.0)
    with pytest.raises(TypeError, match="wraps a tower"):
        ro.HoldCuts(ro.Adam())
    with pytest.raises(ValueError, match="depth >= 2"):
        ro.HoldCuts(ro.Stack[1](ro.Adam()))
    with pytest.raises(ValueError, match="untied"):
        ro.HoldCuts(ro.Stack[3](ro.Adam(1e-2), tie=True))
    with pytest.raises(ValueError, match="per element"):
        ro.HoldCuts(ro.Stack[2](ro.Adam(ro.hyper(1e-2, per="element"))))
    with pytest.raises(ValueError, match="no tuned `lr`"):
        ro.HoldCuts(ro.Stack[2](ro.Adam(ro.fixed(1e-2), b1=ro.hyper(0.9))))
    with pytest.raises(ValueError, match="ratio"):
        ro.HoldCuts(ro.Stack[2](ro.Adam()), ratio=0.0)
    with pytest.raises(ValueError, match="start"):
        ro.HoldCuts(ro.Stack[2](ro.Adam()), start=-1)
    assert isinstance(eqx.filter_jit(held.init)(params), ro.HoldState)
