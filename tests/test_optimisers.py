"""Each optimiser alone: parity with optax, convergence, finite hypergradients."""

from typing import ClassVar

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import recursive_opt as ro
from recursive_opt._hyper import tuned_raw

from .helpers import (
    CATALOGUE,
    CATALOGUE_IDS,
    PROBLEM_IDS,
    PROBLEMS,
    copies,
    run_tower,
)


def _run_optax(tx, loss, params, steps):
    state = tx.init(params)
    trajectory = []
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        trajectory.append(updates)
        params = optax.apply_updates(params, updates)
    return params, trajectory


@pytest.mark.parametrize("problem", PROBLEMS, ids=PROBLEM_IDS)
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_matches_optax(entry, problem, getkey):
    params = problem.init(getkey())
    ours, ours_traj = _run_optax(entry.make().as_optax(), problem.loss, params, 25)
    ref, ref_traj = _run_optax(entry.optax_equiv, problem.loss, params, 25)
    chex.assert_trees_all_close(ours_traj, ref_traj, rtol=1e-12, atol=1e-15)
    chex.assert_trees_all_close(ours, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_matches_optax_float32(entry, getkey):
    """float32 parameters: same dtype out, equal up to float32 rounding of b1/b2."""
    problem = PROBLEMS[1]
    params = jax.tree.map(lambda x: x.astype(jnp.float32), problem.init(getkey()))
    ours, _ = _run_optax(entry.make().as_optax(), problem.loss, params, 25)
    ref, _ = _run_optax(entry.optax_equiv, problem.loss, params, 25)
    chex.assert_trees_all_equal_dtypes(ours, params)
    chex.assert_trees_all_close(ours, ref, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("problem", PROBLEMS, ids=PROBLEM_IDS)
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_converges(entry, problem, depth, getkey):
    levels = [entry.make()] + [ro.Adam(1e-3)] * (depth - 1)
    params, state, losses = run_tower(
        ro.Stack(*levels), problem.loss, problem.init(getkey()), 300
    )
    assert jnp.all(jnp.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    chex.assert_tree_all_finite(ro.hyperparams(state))


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_unused_leaf_keeps_everything_finite(entry, tie, getkey):
    """A leaf whose gradient is always exactly 0 (d sqrt(v)/dv = inf at v = 0)."""

    def loss(p):
        return jnp.sum((p["used"] - 1.0) ** 2)

    params = {"used": jnp.zeros(3), "unused": jnp.ones((2, 2))}
    for per in ["tree", "element"]:
        tower = copies(3, entry.make(per), tie)
        params_out, state, losses = run_tower(tower, loss, params, 20)
        chex.assert_tree_all_finite((params_out, state, losses))
        if entry.name != "adamw":  # weight decay moves every leaf
            np.testing.assert_array_equal(params_out["unused"], params["unused"])


def test_momentum_zero_keeps_no_buffer():
    opt = ro.SGD(0.1, momentum=0.0)
    assert opt.momentum is None
    assert opt.init({"a": jnp.zeros(3)}).trace is None
    state = ro.Stack(opt, ro.SGD(1e-3)).init({"a": jnp.zeros(3)})
    assert set(tuned_raw(state.opts[0])) == {"lr"}
    assert set(ro.hyperparams(state)[0]) == {"lr"}


def test_hyperparameters_keep_parameter_dtype(getkey):
    """x64 is on: float64 hyperparameters must not promote float32 parameters."""
    params = {"w": jnp.ones((4, 3), jnp.float32), "h": jnp.ones(3, jnp.bfloat16)}
    for opt in [ro.Adam(1e-2, weight_decay=0.01), ro.SGD(0.1, momentum=0.9)]:
        tower = copies(2, opt)
        state = tower.init(params)
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
        for _ in range(3):
            updates, state = tower.update(grads, state, params)
            chex.assert_trees_all_equal_dtypes(updates, params)
            params = ro.apply_updates(params, updates)
        chex.assert_trees_all_equal_dtypes(params, grads)


BF16_CASES = [(e.make, e.optax_equiv) for e in CATALOGUE] + [
    (lambda: ro.Adam(1e-3), optax.adam(1e-3))  # b2 = 0.999: 1.0 in bfloat16
]


@pytest.mark.parametrize(
    "make, tx", BF16_CASES, ids=[*CATALOGUE_IDS, "adam_default_b2"]
)
def test_bfloat16_parameters_match_optax_in_float32(make, tx, getkey):
    """bfloat16 parameters: updates and state stay bfloat16, and the updates are
    optax's in float32 on the same gradients, up to bfloat16 rounding. The
    hyperparameters are float32 there (in bfloat16 b2 = 0.999 is 1, and Adam's
    bias correction 1 - b2**t is 0)."""
    base = jax.random.normal(getkey(), (5, 4))
    params = {"w": jnp.ones((5, 4), jnp.bfloat16), "b": jnp.zeros(4, jnp.bfloat16)}
    opt = make()
    state, ref_state = opt.init(params), tx.init(jax.tree.map(_f32, params))
    dtypes = [x.dtype for x in jax.tree.leaves(state)]
    for t in range(6):
        # Of one sign per coordinate and shrinking: no cancellation in the moments.
        noise = 1 + 0.1 * jax.random.normal(getkey(), (5, 4))
        w = (base * noise * 0.7**t).astype(jnp.bfloat16)
        grads = {"w": w, "b": w[0]}
        updates, state = opt.update(grads, state, params)
        ref, ref_state = tx.update(
            jax.tree.map(_f32, grads), ref_state, jax.tree.map(_f32, params)
        )
        chex.assert_trees_all_equal_dtypes(updates, params)
        assert [x.dtype for x in jax.tree.leaves(state)] == dtypes
        scale = max(float(jnp.max(jnp.abs(u))) for u in jax.tree.leaves(ref))
        chex.assert_trees_all_close(
            jax.tree.map(_f32, updates), ref, rtol=3e-2, atol=1e-3 * scale
        )
        params = ro.apply_updates(params, updates)


def _f32(x):
    return x.astype(jnp.float32)


def test_raw_hyperparameters_are_strong_default_floats():
    """Whatever the value's dtype: weak types would retrace, 16-bit is too coarse."""
    opt = ro.Adam(np.float32(1e-3), b1=jnp.bfloat16(0.875), b2=0.99)
    for h in [opt.lr, opt.b1, opt.b2, opt.eps]:
        assert h.raw.dtype == jnp.result_type(float)
        assert not h.raw.weak_type
    np.testing.assert_allclose(opt.b1.value, 0.875, rtol=1e-12)


@pytest.mark.parametrize(
    "weight_decay, clip",
    [
        (0.0, 1.1),
        (0.1, 1.1),
        (0.0, (-1.1, None)),
        (0.1, (None, 1.2)),
        (0.0, (-1.05, 1.3)),
    ],
)
def test_adam_clip_is_optax_adam_with_its_step_clipped(weight_decay, clip, getkey):
    """`Adam(clip=c)` equals optax's Adam with `optax.clip(c)` between the
    normalised step and the learning rate (and weight decay after the clip), on
    gradients whose size jumps, so that the bound binds on some coordinates; a
    pair `(low, high)` the same with the step clipped to [low, high]."""
    lr = 0.02
    low, high = (-clip, clip) if isinstance(clip, float) else clip
    opt = ro.Adam(lr, b1=0.5, b2=0.99, weight_decay=weight_decay, clip=clip)
    if isinstance(clip, float):
        clip_tx = optax.clip(clip)
    else:
        clip_tx = optax.stateless(
            lambda u, _: jax.tree.map(lambda x: jnp.clip(x, low, high), u)
        )
    tx = optax.chain(
        optax.scale_by_adam(0.5, 0.99, 1e-8),
        clip_tx,
        optax.add_decayed_weights(weight_decay),
        optax.scale(-lr),
    )
    params = {"w": jax.random.normal(getkey(), (16,)), "z": jnp.zeros(2)}
    state, tx_state = opt.init(params), tx.init(params)
    free_tx = optax.scale_by_adam(0.5, 0.99, 1e-8)  # the step before the clip
    free_state, bound = free_tx.init(params), []
    for t in range(8):
        size = 1e-3 if t < 6 else 10.0  # quiet, then a jump
        grads = {"w": size * jax.random.normal(getkey(), (16,)), "z": jnp.zeros(2)}
        updates, state = opt.update(grads, state, params)
        expected, tx_state = tx.update(grads, tx_state, params)
        chex.assert_trees_all_close(updates, expected, rtol=1e-12, atol=1e-15)
        free, free_state = free_tx.update(grads, free_state)
        w = np.asarray(free["w"])
        bound.append(
            np.any(w < (-np.inf if low is None else low))
            or np.any(w > (np.inf if high is None else high))
        )
        params = optax.apply_updates(params, updates)
    assert bound[-1] and not bound[0]  # the jump is clipped, the first step not


def test_adam_clip_options():
    """`clip` takes None, a finite bound > 0, or a pair with low < 0 < high (None
    for an open side, not both); anything else is a clear error."""
    bad_clips = [0, -1.0, float("inf"), True, "1", (0.0, None), (None, None)]
    bad_clips += [(-1.0,), (1.0, 2.0), (-1.0, -0.5), (-np.inf, 1.0), (-1.0, True)]
    for bad in bad_clips:
        with pytest.raises(ValueError, match="clip"):
            ro.Adam(0.1, clip=bad)
    assert ro.Adam(0.1).clip is None and ro.Adam(0.1, clip=np.float32(2)).clip == 2.0
    assert ro.Adam(0.1, clip=[np.float32(-2), None]).clip == (-2.0, None)
    assert ro.Adam(0.1, clip=(None, 3)).clip == (None, 3.0)


@pytest.mark.parametrize("weight_decay, clip", [(0.0, None), (0.1, (-1.1, None))])
def test_adam_gate_scales_raises_by_the_signals_certainty(weight_decay, clip, getkey):
    """`Adam(gate=(decay, after))` equals optax's Adam step (clipped as `clip`
    says) whose negative coordinates, from step `after + 1` on, are multiplied by
    min(1, s_hat^2 / v_hat), with s and v kept here by hand (s a running mean of
    the gradients at `decay`, v their second moment at b2, both bias-corrected),
    before weight decay and the learning rate. The gradients are a steady
    negative signal on half the coordinates (raises: factor near 1) and zero-mean
    noise on the other half (factor near 0)."""
    lr, b1, b2, decay, after = 0.02, 0.5, 0.99, 0.9, 3
    opt = ro.Adam(
        lr, b1=b1, b2=b2, weight_decay=weight_decay, clip=clip, gate=(decay, after)
    )
    step_tx = optax.scale_by_adam(b1, b2, 1e-8)
    params = {"w": jax.random.normal(getkey(), (16,)), "z": jnp.zeros(2)}
    state, step_state = opt.init(params), step_tx.init(params)
    s_w, v_w = np.zeros(16), np.zeros(16)
    factors = []
    for t in range(1, 13):
        noise = jax.random.normal(getkey(), (16,))
        g_w = jnp.where(jnp.arange(16) < 8, 1.0 + 0.1 * noise, noise)
        grads = {"w": g_w, "z": jnp.zeros(2)}
        updates, state = opt.update(grads, state, params)
        step, step_state = step_tx.update(grads, step_state)
        w = np.asarray(step["w"])
        if clip is not None:
            w = np.maximum(w, clip[0])
        s_w = decay * s_w + (1 - decay) * np.asarray(g_w)
        v_w = b2 * v_w + (1 - b2) * np.asarray(g_w) ** 2
        r = (s_w / (1 - decay**t)) ** 2 / (v_w / (1 - b2**t))
        factor = np.where((w < 0) & (t > after), np.minimum(r, 1.0), 1.0)
        factors.append(factor)
        p_w = np.asarray(params["w"])
        expected = -lr * (w * factor + weight_decay * p_w)
        np.testing.assert_allclose(updates["w"], expected, rtol=1e-10, atol=1e-15)
        np.testing.assert_array_equal(updates["z"], -lr * weight_decay * params["z"])
        params = optax.apply_updates(params, updates)
    # Not a no-op: the steady raises pass at nearly full size, the noisy ones not,
    # and nothing is gated in the first `after` steps.
    late = np.array(factors[after:])
    assert np.all(np.array(factors[:after]) == 1.0)
    steady, noisy = late[:, :8], late[:, 8:]
    assert np.min(steady) > 0.9 and np.median(noisy[noisy < 1]) < 0.3


@pytest.mark.parametrize("cuts_from", [None, 9])
def test_adam_gate_tests_cuts_by_a_long_mean(getkey, cuts_from):
    """`Adam(gate=(decay, after, z))`: raises as with the pair; from step `after +
    1` on, a positive (lowering) step is multiplied by min(1, t^2 / z^2), t the
    long running mean (decay 1 - 1 / after, bias-corrected) over its standard
    error sqrt((v_hat - l_hat^2) (1 - D) / (1 + D)), where that mean says lower,
    else by 0; all kept here by hand. A steady positive signal (cuts pass), a
    steady negative one (raises pass) and zero-mean noise (both damped). With a
    quadruple `(decay, after, z, cuts_from)` the cut test starts at step
    `cuts_from + 1` (cuts at full size before), the raises' gate as before."""
    lr, b1, b2, decay, after, z = 0.02, 0.5, 0.99, 0.9, 4, 1.0
    gate = (decay, after, z) if cuts_from is None else (decay, after, z, cuts_from)
    opt = ro.Adam(lr, b1=b1, b2=b2, gate=gate)
    tested_from = after if cuts_from is None else cuts_from
    step_tx = optax.scale_by_adam(b1, b2, 1e-8)
    params = {"w": jnp.zeros(24)}
    state, step_state = opt.init(params), step_tx.init(params)
    assert state.signal["w"].shape == (2, 24)
    long = 1 - 1 / after
    s_w, l_w, v_w = np.zeros(24), np.zeros(24), np.zeros(24)
    factors, steps = [], []
    for t in range(1, 41):
        noise = np.asarray(jax.random.normal(getkey(), (24,)))
        g = np.where(np.arange(24) < 8, 1.0, np.where(np.arange(24) < 16, -1.0, 0.0))
        g = g + np.where(np.arange(24) < 16, 0.1, 1.0) * noise
        updates, state = opt.update({"w": jnp.asarray(g)}, state, params)
        step, step_state = step_tx.update({"w": jnp.asarray(g)}, step_state)
        w = np.asarray(step["w"])
        steps.append(w)
        s_w = decay * s_w + (1 - decay) * g
        l_w = long * l_w + (1 - long) * g
        v_w = b2 * v_w + (1 - b2) * g**2
        v_hat = v_w / (1 - b2**t)
        s_hat, l_hat = s_w / (1 - decay**t), l_w / (1 - long**t)
        r = s_hat**2 / v_hat
        se2 = (v_hat - l_hat**2) * (1 - long) / (1 + long)
        q = np.where(se2 > 0, l_hat**2 / np.where(se2 > 0, se2, 1) / z**2, np.inf)
        cut = np.where(l_hat > 0, np.minimum(q, 1.0), 0.0)
        late = t > after
        factor = np.where(late & (w < 0), np.minimum(r, 1.0), 1.0)
        factor = np.where((t > tested_from) & (w > 0), cut, factor)
        factors.append(factor)
        np.testing.assert_allclose(
            updates["w"], -lr * w * factor, rtol=1e-10, atol=1e-15
        )
    late = np.array(factors[after:])
    assert np.all(np.array(factors[:after]) == 1.0)
    # Between the raises' gate and the cut test, lowering steps pass whole (the
    # noisy coordinates have some), raising ones are gated.
    between = range(after, tested_from)  # steps after + 1 .. tested_from
    lowering = [factors[i][steps[i] > 0] for i in between]
    assert all(np.all(f == 1.0) for f in lowering)
    if cuts_from is not None:
        assert sum(f.size for f in lowering) > 0
        assert any(np.any(factors[i][steps[i] < 0] < 1.0) for i in between)
    # Steady cuts and raises pass at (nearly) full size; noisy ones are damped.
    assert np.min(late[10:, :16]) > 0.9
    noisy = late[:, 16:]
    assert np.median(noisy) < 0.5 and np.any((noisy > 0) & (noisy < 1))


def test_adam_gate_options():
    """`gate` takes None, a pair (decay in (0, 1), an int after >= 0), a triple
    (decay, after >= 2, z > 0) or a quadruple (..., an int cuts_from >= after);
    anything else is a clear error."""
    bad = [0.9, (0.9,), (1.0, 10), (0.0, 10), (0.9, -1), (0.9, 1.5), (0.9, True)]
    bad += [(True, 10), ("0.9", 10), (0.9, 10, 0), (0.9, 10, -1.0), (0.9, 1, 1.0)]
    bad += [(0.9, 10, float("inf")), (0.9, 10, None), (0.9, 10, True), (0.9, 10, 1, 1)]
    bad += [(0.9, 10, 1.0, 9), (0.9, 10, 1.0, 20.0), (0.9, 10, 1.0, True)]
    bad += [(0.9, 10, None, 20), (0.9, 10, 1.0, 20, 30)]
    for b in bad:
        with pytest.raises(ValueError, match="gate"):
            ro.Adam(0.1, gate=b)
    assert ro.Adam(0.1).gate is None
    assert ro.Adam(0.1, gate=[np.float32(0.5), np.int64(7)]).gate == (0.5, 7)
    assert ro.Adam(0.1, gate=(0.9, 100, np.float32(2))).gate == (0.9, 100, 2.0)
    assert ro.Adam(0.1, gate=(0.9, 100, 1, np.int64(300))).gate == (0.9, 100, 1.0, 300)
    assert ro.Adam(0.1, gate=(0.9, 100, 1.0, 100)).gate == (0.9, 100, 1.0, 100)


def test_adam_normalise_is_optax_adam_on_gradients_over_their_running_mean(getkey):
    """`Adam(normalise=d)`: each coordinate divided by the bias-corrected running
    mean of its |gradient| (this step's included), then optax's Adam; a coordinate
    whose gradients have all been 0 stays 0."""
    d = 0.8
    opt, tx = ro.Adam(0.02, b1=0.9, b2=0.99, normalise=d), optax.adam(0.02, 0.9, 0.99)
    params = {"w": jax.random.normal(getkey(), (4,)), "z": jnp.zeros(2)}
    state, tx_state = opt.init(params), tx.init(params)
    scale = np.zeros(4)
    for t in range(1, 6):
        # Scales falling by a decade a step: Adam alone would slow down.
        w = np.asarray(jax.random.normal(getkey(), (4,))) * 10.0**-t
        grads = {"w": jnp.asarray(w), "z": jnp.zeros(2)}
        scale = d * scale + (1 - d) * np.abs(w)
        by_hand = {"w": jnp.asarray(w / (scale / (1 - d**t))), "z": jnp.zeros(2)}
        updates, state = opt.update(grads, state)
        expected, tx_state = tx.update(by_hand, tx_state)
        chex.assert_trees_all_close(updates, expected, rtol=1e-12)
        assert np.all(np.asarray(updates["z"]) == 0)
    assert opt.normalise == d and ro.Adam(0.1).init(params).scale is None
    assert ro.Adam(0.1, normalise=np.float32(0.5)).normalise == 0.5
    for bad in [0, 1, 1.5, True, "0.9"]:
        with pytest.raises(ValueError, match="normalise"):
            ro.Adam(0.1, normalise=bad)


def test_fixed_value_on_the_edge_of_its_transform(getkey):
    """b1 = 0 is outside the logit's open range; fixed, it is Adam without momentum
    (optax's `adam(b1=0)`), and a tower over it keeps b1 at 0."""
    problem = PROBLEMS[0]
    params = problem.init(getkey())
    opt = ro.Adam(0.01, b1=ro.fixed(0.0))
    _, ours = _run_optax(opt.as_optax(), problem.loss, params, 10)
    _, ref = _run_optax(optax.adam(0.01, b1=0.0), problem.loss, params, 10)
    chex.assert_trees_all_close(ours, ref, rtol=1e-12, atol=1e-15)
    tower = ro.Stack[2](opt)
    state = tower.init(params)
    for _ in range(3):
        grads = jax.grad(problem.loss)(params)
        updates, state = tower.update(grads, state, params)
        params = ro.apply_updates(params, updates)
    assert float(ro.hyperparams(state)[0]["b1"]) == 0.0
    assert jax.tree.all(jax.tree.map(lambda u: bool(jnp.isfinite(u).all()), updates))
    # Off the edge, or tuned, the range is still enforced.
    with pytest.raises(ValueError, match=r"open interval \(0, 1\).*ro.fixed\(value\)"):
        ro.Adam(b1=0.0)
    with pytest.raises(ValueError, match="> 0") as info:
        ro.SGD(ro.fixed(-0.1))
    assert "ro.fixed" not in str(info.value)


class _Lion(ro.AbstractOptimiser):
    """Lion (Chen et al. 2023) written with the public API alone, as a user would."""

    lr: ro.Hyper
    b1: ro.Hyper
    b2: ro.Hyper
    uses_params: bool = eqx.field(static=True, default=False)

    def __init__(self, lr=1e-4, b1=ro.fixed(0.9), b2=ro.fixed(0.99)):
        self.lr = ro.Hyper.declare(lr, "log", owner="Lion", name="lr")
        self.b1 = ro.Hyper.declare(b1, "logit", owner="Lion", name="b1")
        self.b2 = ro.Hyper.declare(b2, "logit", owner="Lion", name="b2")

    def init_state(self, params):
        return jax.tree.map(jnp.zeros_like, params)

    def rule(self, grads, mu, params, hp):
        updates = jax.tree.map(
            lambda g, m, lr, b1: -lr * jnp.sign(b1 * m + (1 - b1) * g),
            grads,
            mu,
            hp["lr"],
            hp["b1"],
        )
        mu = jax.tree.map(lambda g, m, b2: b2 * m + (1 - b2) * g, grads, mu, hp["b2"])
        return updates, mu


def test_an_optimiser_of_ones_own_matches_optax_and_gets_exact_hypergradients(getkey):
    problem = PROBLEMS[0]
    params = problem.init(getkey())
    ours = _run_optax(_Lion(0.01).as_optax(), problem.loss, params, 10)[1]
    ref = optax.lion(0.01, weight_decay=0.0)
    chex.assert_trees_all_close(
        ours, _run_optax(ref, problem.loss, params, 10)[1], rtol=1e-12
    )
    # Its lr's one-step hypergradient, against autodiff through optax's Lion: the
    # level above's second step moves the log lr by -alpha * d loss(p1) / d log lr,
    # p1 = p0 + lion(exp(log lr))'s first update.
    alpha = 1e-3
    tower = ro.Stack(_Lion(0.01), ro.SGD(alpha))
    state = tower.init(params)
    grads0 = jax.grad(problem.loss)(params)
    updates, state = tower.update(grads0, state, params)
    p1 = ro.apply_updates(params, updates)
    _, state = tower.update(jax.grad(problem.loss)(p1), state, p1)

    def loss_after_one_step(log_lr):
        tx = optax.lion(jnp.exp(log_lr), weight_decay=0.0)
        u, _ = tx.update(grads0, tx.init(params), params)
        return problem.loss(optax.apply_updates(params, u))

    hypergrad = jax.grad(loss_after_one_step)(jnp.log(0.01))
    assert abs(hypergrad) > 1e-6
    np.testing.assert_allclose(
        jnp.log(ro.hyperparams(state)[0]["lr"]),
        jnp.log(0.01) - alpha * hypergrad,
        rtol=1e-12,
    )
    # Declarations and invalid values behave as for the library's optimisers.
    lion = _Lion(ro.hyper(0.01, per="leaf"), b1=0.9)
    assert lion.lr.per == "leaf" and lion.b1.tune and not lion.b2.tune
    with pytest.raises(ValueError, match="Lion: hyperparameter `lr` must be > 0"):
        _Lion(-1.0)
    with pytest.raises(ValueError, match="transform must be one of"):
        ro.Hyper.declare(0.1, "lg")


def test_default_tower_over_an_optimiser_of_ones_own_corrects_its_lr(getkey):
    problem = PROBLEMS[0]
    params = problem.init(getkey())
    start = problem.loss(params)
    for lr in (1.0, 1e-5):  # a constant lr ends far off from either
        tower = ro.Stack[3](_Lion(lr), warmup=20)
        assert tower.levels[0].lr.per == "layer" and not tower.levels[0].b1.tune
        final, _, _ = run_tower(tower, problem.loss, params, 200)
        assert problem.loss(final) < 1e-2 * start
        alone, _, _ = run_tower(ro.Stack[1](_Lion(lr)), problem.loss, params, 200)
        assert problem.loss(alone) > 0.5 * start


class _MomentumSGD(ro.AbstractOptimiser):
    """SGD with momentum written by a user, declared not adaptive: its step is lr
    x the averaged gradient, not about lr per coordinate."""

    lr: ro.Hyper
    momentum: ro.Hyper
    uses_params: bool = eqx.field(static=True, default=False)
    adaptive: ClassVar[bool] = False

    def __init__(self, lr=1e-2, momentum=0.9):
        self.lr = ro.Hyper.declare(lr, "log", owner="MomentumSGD", name="lr")
        self.momentum = ro.Hyper.declare(
            momentum, "logit", owner="MomentumSGD", name="momentum"
        )

    def init_state(self, params):
        return jax.tree.map(jnp.zeros_like, params)

    def rule(self, grads, buf, params, hp):
        buf = jax.tree.map(lambda g, b, m: g + m * b, grads, buf, hp["momentum"])
        return jax.tree.map(lambda b, lr: -lr * b, buf, hp["lr"]), buf


class _AdaptiveMomentumSGD(_MomentumSGD):
    adaptive: ClassVar[bool] = True  # wrongly: for the default levels' contrast


def test_default_levels_follow_the_rule_s_adaptive_attribute(getkey):
    """`Stack[d](opt)` picks its levels by `opt.adaptive`, not by its class: a
    user's momentum SGD that says it is not adaptive gets the SGD tower's levels
    and, step for step, the SGD tower's trajectory; said adaptive (the default of
    `AbstractOptimiser`), the adaptive rules' levels."""
    assert ro.AbstractOptimiser.adaptive and ro.Adam.adaptive and not ro.SGD.adaptive
    ours, sgd = ro.Stack[3](_MomentumSGD(0.05)), ro.Stack[3](ro.SGD(0.05, 0.9))
    assert (ours.warmup, ours.warmup_shape) == (sgd.warmup, sgd.warmup_shape)
    assert (ours.warmup, ours.warmup_shape) == (300, "linear")
    assert ours.levels[0].lr.per == "leaf" and ours.levels[0].lr.bounds is None
    assert not ours.levels[0].momentum.tune
    for a, b in zip(ours.levels[1:], sgd.levels[1:]):
        assert (a.clip, a.gate) == (b.clip, b.gate) == (None, None)
        assert float(a.b1.value) == float(b.b1.value) == pytest.approx(0.9)
    problem = PROBLEMS[0]
    params = problem.init(getkey())
    mine, mine_state, mine_losses = run_tower(ours, problem.loss, params, 40)
    ref, ref_state, ref_losses = run_tower(sgd, problem.loss, params, 40)
    chex.assert_trees_all_close(mine, ref, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(
        ro.hyperparams(mine_state)[0]["lr"],
        ro.hyperparams(ref_state)[0]["lr"],
        rtol=1e-10,
    )
    assert not np.allclose(ro.hyperparams(mine_state)[0]["lr"]["w"], 0.05)
    adaptive = ro.Stack[3](_AdaptiveMomentumSGD(0.05))
    assert (adaptive.warmup, adaptive.warmup_shape) == (100, "geometric")
    assert adaptive.levels[0].lr.per == "layer"
    assert adaptive.levels[0].lr.bounds == (None, 1.0)
    assert adaptive.levels[1].gate is not None and float(
        adaptive.levels[1].b1.value
    ) == pytest.approx(0.5)
