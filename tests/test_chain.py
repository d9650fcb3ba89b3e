"""The tower's hypergradient chain against brute-force autodiff of step t-1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt._hyper import broadcast_values, resolve, tuned_raw
from recursive_opt._hypergradients import one_step

from .helpers import (
    BY_NAME,
    CATALOGUE,
    CATALOGUE_IDS,
    PROBLEMS,
    brute_force_tied,
    brute_force_untied,
    copies,
    forward_mode_jacobian,
)

STEPS = 6
TOL = dict(rtol=1e-9, atol=1e-12)
# Adam's hypergradient w.r.t. b1 at its first step is exactly 0 in exact arithmetic;
# the VJP and the brute force round it to different ~1e-17 values, and an Adam level
# above normalises that noise into a step bounded by its eps (~1e-9 relative).
ADAM_TOL = dict(rtol=1e-6, atol=1e-10)


def _raw_leaves(opts):
    # The tower keeps the model's parameters as the list of their leaves; compare
    # leaf by leaf (same order) with the brute force's dicts.
    return jax.tree.leaves([tuned_raw(o) for o in opts])


def _tol(names):
    return ADAM_TOL if any(n.startswith("adam") for n in names) else TOL


quadratic, logistic = PROBLEMS


def _library(tower, problem, steps=STEPS):
    # Eager, so that the comparison is exact up to float64 rounding: jit's fusions
    # round differently, and hypergradients amplify that. (test_jit.py checks jit.)
    x = problem.init(jax.random.key(1))
    state = tower.init(x)
    for _ in range(steps):
        updates, state = tower.update(jax.grad(problem.loss)(x), state, x)
        x = ro.apply_updates(x, updates)
    return x, state


LEVEL1_LR_ONLY = ro.Adam(
    ro.hyper(0.05, per="leaf"), b1=ro.fixed(0.9), b2=ro.fixed(0.999)
)


def _upper_adams_match_brute_force(level2, level3):
    """A depth-3 tower (level 1 `LEVEL1_LR_ONLY`) on the quadratic: its
    parameters and raw hyperparameters equal the brute force's. Returns the
    library's (params, state) and the brute force's hypergradients."""
    levels = [LEVEL1_LR_ONLY, level2, level3]
    params, state = _library(ro.Stack(*levels), quadratic)
    bf_params, bf_hs, bf_G = brute_force_untied(
        levels, quadratic.loss, quadratic.init(None), STEPS
    )
    chex.assert_trees_all_close(params, bf_params, **ADAM_TOL)
    chex.assert_trees_all_close(
        _raw_leaves(state.opts[:-1]), jax.tree.leaves(bf_hs), **ADAM_TOL
    )
    return params, state, bf_G


def test_normalised_adam_levels_match_brute_force():
    """Upper levels with `Adam(normalise=...)` (level 2's betas tuned too, so
    every closed-form column sees the normalised gradients) against the brute
    force. Level 1 tunes its lr alone: its betas' hypergradients are exactly 0 at
    the first step, and normalising makes rounding noise there a full step."""
    _, state, bf_G = _upper_adams_match_brute_force(
        ro.Adam(0.1, b1=0.8, b2=0.95, normalise=0.9), ro.Adam(0.01, normalise=0.5)
    )
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf_G))
    # Not a no-op: level 2 divided its gradients by running means far from 1.
    scales = jax.tree.leaves(state.states[1].scale)
    assert scales and all(np.all((s > 0) & (np.abs(s - 1) > 1e-3)) for s in scales)


def test_clipped_adam_levels_match_brute_force():
    """Upper levels with `Adam(clip=...)` (level 2's betas tuned too, so the
    closed-form columns' zeros where a step is clipped are checked) against the
    brute force, with bounds small enough to bind (the first nonzero Adam step
    is about 1 in every coordinate). Forward mode checks the columns on steps
    where some coordinates are clipped and some not
    (`test_closed_form_jacobians_match_forward_mode[adam_clipped]`). Level 3's
    bound is one-sided, on its level's raises of level 2's lr (as the
    defaults)."""
    params, _, _ = _upper_adams_match_brute_force(
        ro.Adam(0.1, b1=0.5, b2=0.95, clip=0.7), ro.Adam(0.01, clip=(-0.5, None))
    )
    # Not a no-op: without either level's bound the same tower ends elsewhere.
    for free in [
        [ro.Adam(0.1, b1=0.5, b2=0.95), ro.Adam(0.01, clip=(-0.5, None))],
        [ro.Adam(0.1, b1=0.5, b2=0.95, clip=0.7), ro.Adam(0.01)],
    ]:
        unclipped, _ = _library(ro.Stack(LEVEL1_LR_ONLY, *free), quadratic)
        diff = [
            np.max(np.abs(a - b))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(unclipped))
        ]
        assert max(diff) > 1e-6


def test_gated_adam_levels_match_brute_force():
    """Upper levels with `Adam(gate=...)` (level 2's betas tuned too, so the
    closed-form columns' derivative of the gate's factor through v_hat is
    checked; level 3 gated and clipped as level 2 of the defaults) against the
    brute force, and not a no-op: the gate scaled some raises by less than 1."""
    level2 = ro.Adam(0.1, b1=0.5, b2=0.95, gate=(0.8, 2))
    level3 = ro.Adam(0.01, clip=(-0.5, None), gate=(0.9, 0))
    params, state, _ = _upper_adams_match_brute_force(level2, level3)
    ungated = [ro.Adam(0.1, b1=0.5, b2=0.95), ro.Adam(0.01, clip=(-0.5, None))]
    free, _ = _library(ro.Stack(LEVEL1_LR_ONLY, *ungated), quadratic)
    diff = [
        np.max(np.abs(a - b))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(free))
    ]
    assert max(diff) > 1e-6
    assert jax.tree.leaves(state.states[1].signal)


def test_cut_tested_adam_levels_match_brute_force():
    """Upper levels with `Adam(gate=(decay, after, z))` (cuts passed by a long
    mean's test; level 2's betas tuned too, so the cut factor's derivative
    through v_hat is checked) against the brute force, and not the pair gate:
    the test scaled some cuts."""
    level2 = ro.Adam(0.1, b1=0.5, b2=0.95, gate=(0.8, 2, 1.0))
    level3 = ro.Adam(0.01, clip=(-0.5, None), gate=(0.9, 2, 0.5))
    params, state, _ = _upper_adams_match_brute_force(level2, level3)
    pair = [ro.Adam(0.1, b1=0.5, b2=0.95, gate=(0.8, 2)), ro.Adam(0.01, gate=(0.9, 2))]
    untested, _ = _library(ro.Stack(LEVEL1_LR_ONLY, *pair), quadratic)
    diff = [
        np.max(np.abs(a - b))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(untested))
    ]
    assert max(diff) > 1e-6
    signal = jax.tree.leaves(state.states[1].signal)
    assert signal and all(x.shape[0] == 2 for x in signal)


def test_late_cut_tested_adam_levels_match_brute_force():
    """Upper levels with `Adam(gate=(decay, after, z, cuts_from))` (the cut test
    from a later step than the raises' gate) against the brute force. On this
    problem level 3's cuts are what a test changes: with the test from step 5
    the path differs from both the triple's (tested from step 3) and the pair's
    (never tested)."""
    level2 = ro.Adam(0.1, b1=0.5, b2=0.95, gate=(0.8, 2, 1.0, 4))
    level3 = ro.Adam(0.01, clip=(-0.5, None), gate=(0.9, 2, 0.5, 4))
    params, _, _ = _upper_adams_match_brute_force(level2, level3)
    for gates in [((0.8, 2, 1.0), (0.9, 2, 0.5)), ((0.8, 2), (0.9, 2))]:
        levels = [
            ro.Adam(0.1, b1=0.5, b2=0.95, gate=gates[0]),
            ro.Adam(0.01, clip=(-0.5, None), gate=gates[1]),
        ]
        other, _ = _library(ro.Stack(LEVEL1_LR_ONLY, *levels), quadratic)
        diff = [
            np.max(np.abs(a - b))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other))
        ]
        assert max(diff) > 1e-6, gates


# Depth 3 checks G2 and G3 for every `per`; depth 2 adds the two-level edge case.
DEPTH_PER = [(2, "tree"), (3, "tree"), (3, "leaf"), (3, "element")]


@pytest.mark.parametrize("depth, per", DEPTH_PER)
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_untied_matches_brute_force(entry, depth, per):
    levels = [entry.make(per)] * depth
    TOL = _tol([entry.name])
    params, state = _library(ro.Stack(*levels), quadratic)
    x0 = quadratic.init(None)
    bf_params, bf_hs, bf_G = brute_force_untied(levels, quadratic.loss, x0, STEPS)
    chex.assert_trees_all_close(params, bf_params, **TOL)
    chex.assert_trees_all_close(
        _raw_leaves(state.opts[:-1]), jax.tree.leaves(bf_hs), **TOL
    )
    # Each G_k moves h_{k-1}: the test is not trivial when all of them are non-zero.
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf_G))


@pytest.mark.parametrize("depth, per", DEPTH_PER)
@pytest.mark.parametrize("entry", CATALOGUE, ids=CATALOGUE_IDS)
def test_tied_matches_brute_force(entry, depth, per):
    opt = entry.make(per)
    TOL = _tol([entry.name])
    params, state = _library(ro.Stack[depth](opt, tie=True), quadratic)
    bf_params, bf_h, bf_total = brute_force_tied(
        opt, depth, quadratic.loss, quadratic.init(None), STEPS
    )
    chex.assert_trees_all_close(params, bf_params, **TOL)
    chex.assert_trees_all_close(_raw_leaves(state.opts), jax.tree.leaves(bf_h), **TOL)
    chex.assert_trees_all_close(
        jax.tree.leaves(state.saved[1].grads), jax.tree.leaves(bf_total), **TOL
    )
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf_total))


@pytest.mark.parametrize(
    "names",
    [
        ("sgd_momentum", "sgd", "sgd"),
        ("adam", "sgd"),
        ("rmsprop", "adam", "sgd_momentum"),
        ("adagrad", "adamw"),
        ("sgd", "adam", "adam", "adam"),
    ],
)
def test_mixed_levels_match_brute_force(names):
    levels = [BY_NAME[n].make() for n in names]
    TOL = _tol(names)
    params, state = _library(ro.Stack(*levels), logistic, steps=5)
    bf_params, bf_hs, bf_G = brute_force_untied(
        levels, logistic.loss, logistic.init(jax.random.key(1)), 5
    )
    chex.assert_trees_all_close(params, bf_params, **TOL)
    chex.assert_trees_all_close(
        _raw_leaves(state.opts[:-1]), jax.tree.leaves(bf_hs), **TOL
    )
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf_G))


def test_depth4_tied_sums_four_uses():
    opt = BY_NAME["adam"].make()
    TOL = ADAM_TOL
    params, state = _library(ro.Stack[4](opt, tie=True), logistic, steps=5)
    bf_params, bf_h, _ = brute_force_tied(
        opt, 4, logistic.loss, logistic.init(jax.random.key(1)), 5
    )
    chex.assert_trees_all_close(params, bf_params, **TOL)
    chex.assert_trees_all_close(_raw_leaves(state.opts), jax.tree.leaves(bf_h), **TOL)
    # Depth matters: the truncation at 3 gives a different trajectory.
    _, state3 = _library(ro.Stack[3](opt, tie=True), logistic, steps=5)
    assert not np.allclose(
        tuned_raw(state.opts[0])["lr"], tuned_raw(state3.opts[0])["lr"], rtol=1e-12
    )


def test_baydin_sgd_hd_closed_form():
    """SGD with identity lr tuned by SGD(kappa): lr_t = lr_{t-1} + kappa g_t.g_{t-1}."""
    kappa, lr0 = 1e-3, 0.05
    tower = ro.Stack(
        ro.SGD(ro.hyper(lr0, transform="identity")),
        ro.SGD(ro.hyper(kappa, transform="identity")),
    )
    loss, x = logistic.loss, logistic.init(jax.random.key(2))
    state = tower.init(x)
    lr, prev_g, x_ref = lr0, None, x
    flat = lambda t: np.concatenate([np.ravel(v) for v in jax.tree.leaves(t)])  # noqa: E731
    for _ in range(10):
        g = jax.grad(loss)(x)
        updates, state = tower.update(g, state)
        x = ro.apply_updates(x, updates)
        g_ref = flat(jax.grad(loss)(x_ref))
        if prev_g is not None:
            lr = lr + kappa * float(g_ref @ prev_g)
        x_ref = jax.tree.map(lambda p, gg: p - lr * gg, x_ref, jax.grad(loss)(x_ref))
        prev_g = g_ref
        np.testing.assert_allclose(ro.hyperparams(state)[0]["lr"], lr, rtol=1e-12)
    chex.assert_trees_all_close(x, x_ref, rtol=1e-12)
    assert lr != lr0


def test_log_lr_hypergradient_is_multiplicative():
    """With the log transform, G2 = -lr * g_t . g_{t-1}: read off a level-2 SGD(kappa),
    which moves log lr by -kappa * G2."""
    kappa = 1e-3
    tower = ro.Stack(ro.SGD(0.05), ro.SGD(ro.hyper(kappa, transform="identity")))
    loss, x = logistic.loss, logistic.init(jax.random.key(3))
    state = tower.init(x)
    g_prev = None
    for _ in range(4):
        g = jax.grad(loss)(x)
        lr = ro.hyperparams(state)[0]["lr"]
        updates, state = tower.update(g, state)
        G2 = (jnp.log(lr) - jnp.log(ro.hyperparams(state)[0]["lr"])) / kappa
        if g_prev is None:
            assert G2 == 0
        else:
            dot = sum(
                jnp.vdot(a, b)
                for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_prev))
            )
            np.testing.assert_allclose(G2, -lr * dot, rtol=1e-9)
        x, g_prev = ro.apply_updates(x, updates), g


@pytest.mark.parametrize(
    "opt",
    [
        ro.SGD(0.1),
        ro.SGD(0.1, momentum=0.8),
        ro.SGD(0.1, momentum=ro.hyper(0.8, per="element"), nesterov=True),
        ro.Adam(0.01, b1=0.8, b2=0.95),
        ro.Adam(0.01, b1=0.01, b2=0.05),  # small decays: (m - g) / b1 loses digits
        ro.SGD(0.1, momentum=0.01),
        ro.Adam(
            ro.hyper(0.01, per="element"),
            eps=ro.hyper(1e-3, tune=True),
            weight_decay=ro.hyper(0.1, tune=True),
        ),
        ro.Adam(0.01, b1=0.8, b2=0.95, normalise=0.9),
        ro.Adam(0.01, b1=0.8, b2=0.95, eps=ro.hyper(1e-3, tune=True), clip=0.9),
        ro.Adam(0.01, b1=0.8, b2=0.95, clip=(None, 0.9)),
        ro.Adam(0.01, b1=0.8, b2=0.95, eps=ro.hyper(1e-3, tune=True), gate=(0.7, 1)),
        ro.Adam(0.01, b1=0.8, b2=0.95, clip=(-0.9, None), gate=(0.5, 0)),
        ro.Adam(
            0.01, b1=0.8, b2=0.95, eps=ro.hyper(1e-3, tune=True), gate=(0.7, 2, 0.5)
        ),
    ],
    ids=[
        "sgd",
        "sgd_momentum",
        "sgd_nesterov_element",
        "adam",
        "adam_small_decays",
        "sgd_small_momentum",
        "adamw_eps_element",
        "adam_normalised",
        "adam_clipped",
        "adam_one_sided",
        "adam_gated",
        "adam_gated_clipped",
        "adam_cuts_tested",
    ],
)
def test_closed_form_jacobians_match_forward_mode(opt, getkey):
    """Adam's and SGD's `jacobian_after`, from a step's gradients and the state it
    returned, equal forward mode through that step's rule."""
    params = {"w": jax.random.normal(getkey(), (5,)), "z": jnp.zeros(3)}
    opt = resolve(opt, params)
    names = tuple(tuned_raw(opt))
    state = opt.init(params)
    hp = broadcast_values(opt, params)
    # Before any step (zero state and gradients), every column is exactly 0.
    before = opt.jacobian_after(
        zeros := jax.tree.map(jnp.zeros_like, params), state, zeros, hp, names
    )
    assert all(np.all(c == 0) for c in jax.tree.leaves(before))
    for _ in range(3):  # the unused leaf `z` keeps v = 0: the safe square root
        grads = {"w": jax.random.normal(getkey(), (5,)), "z": jnp.zeros(3)}
        updates, new_state, slow = forward_mode_jacobian(
            opt, grads, state, params, hp, names
        )
        chex.assert_trees_all_close(
            (updates, new_state), opt.update(grads, state, params), rtol=1e-15
        )
        fast = opt.jacobian_after(grads, new_state, params, hp, names)
        assert tuple(fast) == names
        chex.assert_trees_all_close(fast, slow, rtol=1e-12, atol=1e-15)
        assert all(np.all(np.isfinite(c)) for c in jax.tree.leaves(fast))
        params, state = ro.apply_updates(params, updates), new_state


LR_ELEMENT = ro.hyper(0.05, per="element")
MOMENTUM_ELEMENT = ro.hyper(0.5, per="element")


class _SGDKeepingColumns(ro.SGD):
    recompute_jacobian = False


class _AdamRecomputing(ro.Adam):
    recompute_jacobian = True


class _SGDKeepingGradients(ro.SGD):
    def columns_from_state(self, names):
        return False


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize(
    "opt, flipped",
    [
        (
            ro.SGD(LR_ELEMENT, momentum=MOMENTUM_ELEMENT, nesterov=True),
            _SGDKeepingColumns(LR_ELEMENT, momentum=MOMENTUM_ELEMENT, nesterov=True),
        ),
        (
            ro.Adam(0.01, eps=ro.hyper(1e-3, tune=True), weight_decay=0.1),
            _AdamRecomputing(0.01, eps=ro.hyper(1e-3, tune=True), weight_decay=0.1),
        ),
        (
            ro.SGD(LR_ELEMENT, momentum=ro.fixed(0.8)),
            _SGDKeepingGradients(LR_ELEMENT, momentum=ro.fixed(0.8)),
        ),
    ],
    ids=["sgd", "adamw", "sgd_momentum_lr"],
)
def test_kept_gradients_and_kept_columns_agree(opt, flipped, tie):
    """A level that keeps its last gradients (and recomputes its columns from
    them and its new state), or nothing (its columns are recomputed from its new
    state alone), steps exactly as one that keeps its columns or gradients."""
    runs = [_library(ro.Stack[3](o, tie=tie), logistic) for o in (opt, flipped)]
    (x, state), (x_flipped, state_flipped) = runs
    records = [getattr(s, "record", s) for s in state.saved + state_flipped.saved]
    kinds = {type(r).__name__ for r in records}  # (level 1's is warmed up: Scaled)
    names = ("lr",)
    if opt.columns_from_state(names):  # the learning rate alone is tuned
        assert not flipped.columns_from_state(names)
        assert "FromState" in kinds and kinds & {"LastStep", "Jacobian"}
    else:
        assert opt.recompute_jacobian != flipped.recompute_jacobian
        assert {"LastStep", "Jacobian"} <= kinds
    chex.assert_trees_all_close(x, x_flipped, rtol=1e-12)
    chex.assert_trees_all_close(
        ro.hyperparams(state), ro.hyperparams(state_flipped), rtol=1e-12
    )
    # The hyperparameters moved: the comparison is not of two untouched towers.
    lr0 = jax.tree.leaves(resolve(opt, x).lr.value)
    lr = jax.tree.leaves(ro.hyperparams(state)[0]["lr"])
    assert not all(np.allclose(a, b, rtol=1e-6) for a, b in zip(lr, lr0))


@pytest.mark.parametrize(
    "opt",
    [ro.SGD(0.05, momentum=0.5), ro.Adam(0.01), ro.SGD(0.05)],
    ids=["sgd_momentum", "adam", "sgd"],
)
def test_large_leaf_contractions_match_small_leaf_ones(opt, monkeypatch):
    """Leaves of at least `_LARGE` elements are contracted by reductions instead
    of matrix-vector products: the brute-force tests use small leaves only."""
    small = _library(copies(3, opt), logistic)
    monkeypatch.setattr(one_step, "_LARGE", 1)
    large = _library(copies(3, opt), logistic)
    chex.assert_trees_all_close(small[0], large[0], rtol=1e-12)
    chex.assert_trees_all_close(
        ro.hyperparams(small[1]), ro.hyperparams(large[1]), rtol=1e-12
    )


def _record_kind(state):
    record = state.saved[0].record  # the fused order's `Previous`
    return type(getattr(record, "record", record)).__name__  # under a warm-up


FUSED = ro.OneStep(fused=True)


@pytest.mark.parametrize(
    "make, warmup, kind",
    [
        # Adam with only its lr tuned (the default tower): no stored column.
        (
            lambda: ro.Stack[3](ro.Adam(0.05), hypergradient=FUSED).levels,
            4,
            "FromState",
        ),
        (lambda: ro.Stack[4](ro.SGD(0.05, momentum=0.9)).levels, 0, "FromState"),
        (lambda: [BY_NAME[n].make() for n in ("adam", "adam", "sgd")], 3, "Jacobian"),
        (lambda: [BY_NAME[n].make() for n in ("sgd_momentum", "sgd")], 0, "LastStep"),
        (lambda: [BY_NAME[n].make() for n in ("adamw", "adam")], 0, "Jacobian"),
        (
            lambda: [BY_NAME[n].make() for n in ("rmsprop", "sgd_momentum", "adam")],
            0,
            "Inputs",
        ),
    ],
    ids=["default_adam", "default_sgd_m_depth4", "adam", "sgd_m", "adamw", "mixed"],
)
def test_fused_order_matches_brute_force(make, warmup, kind):
    """`OneStep(fused=True)`: level 1 steps before the levels above move its
    hyperparameters, and every G_k differentiates the path that made the step
    before (its hyperparameters, the upper levels' step before that)."""
    levels = list(make())
    tower = ro.Stack(*levels, hypergradient=FUSED, warmup=warmup)
    # The chain's G_k starts a step later per level than in the reference order.
    params, state = _library(tower, logistic, steps=7)
    assert _record_kind(state) == kind
    x0 = logistic.init(jax.random.key(1))
    bf_params, bf_hs, bf_G = brute_force_untied(
        levels, logistic.loss, x0, 7, warmup, fused=True, shape=tower.warmup_shape
    )
    TOL = _tol([type(o).__name__.lower() for o in levels])
    chex.assert_trees_all_close(params, bf_params, **TOL)
    chex.assert_trees_all_close(
        _raw_leaves(state.opts[:-1]), jax.tree.leaves(bf_hs), **TOL
    )
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf_G))
    # A different order from the reference's: the hyperparameters differ.
    _, ref = _library(ro.Stack(*levels, warmup=warmup), logistic, steps=7)
    assert not np.allclose(
        _raw_leaves(state.opts[:1]), _raw_leaves(ref.opts[:1]), **TOL
    )


# Leaves of every kind for the batched contraction, with its rows (`_ROW`) at 4:
# summed whole (at most a row), in rows (16 = 4 x 4, 8 = 2 x 4), in one sum (21:
# no divisor up to 4 makes at most 4 rows), a scalar leaf; and at the real row
# length, a leaf in rows (300000 = 40 x 7500) and one of prime size 8209.
_CONTRACTED = {
    4: {"a": (3,), "b": (4, 4), "c": (7, 3), "d": (8,), "e": ()},
    8192: {"a": (300, 1000), "b": (8209,), "c": (5,)},
}


@pytest.mark.parametrize("row", sorted(_CONTRACTED))
@pytest.mark.parametrize(
    "kind, names, record_type",
    [
        ("adam", ("lr", "b1", "b2"), one_step.Jacobian),  # stored columns
        ("adam_lr", ("lr",), one_step.FromState),  # recomputed from the state
        ("sgd_momentum", ("lr", "momentum"), one_step.LastStep),  # from gradients
    ],
)
@pytest.mark.parametrize("per", ["tree", "leaf", "element"])
def test_batched_contraction_matches_brute_force(
    row, kind, names, record_type, per, monkeypatch
):
    """Compiled for any platform but a CPU (a GPU), the products of scalar
    hyperparameters are summed in rows of at most `_ROW` elements and every
    leaf's rows in one reduction (fewer kernels); on a CPU, per leaf. Both give
    d sum(cotangent * update) / d raw hp as brute-force autodiff of the update
    does, on leaves summed whole, in rows and in one sum (and with every leaf
    summed into rows, as in the fused order), and the default is the per-leaf
    contraction on a CPU (bit for bit), the batched one elsewhere."""
    monkeypatch.setattr(one_step, "_ROW", row)
    keys = iter(jax.random.split(jax.random.key(0), 20))
    shapes = _CONTRACTED[row]
    params, grads, cot = (
        {k: jax.random.normal(next(keys), s) for k, s in shapes.items()}
        for _ in range(3)
    )
    if kind == "adam_lr":
        opt = ro.Adam(ro.hyper(0.02, per=per), b1=ro.fixed(0.9), b2=ro.fixed(0.99))
    else:
        opt = BY_NAME["adam" if kind == "adam" else kind].make(per)
    opt = resolve(opt, params)
    state = opt.init(params)
    for _ in range(2):  # moments that are not zero
        _, state = opt.update(jax.tree.map(lambda g: 0.5 * g, grads), state, params)
    prefer_state = kind == "adam_lr"  # the fused order's choice
    _, new_state, record = one_step.step_record(
        opt, grads, state, params, prefer_state=prefer_state
    )
    assert (type(record), record.names) == (record_type, names)
    expected = one_step.Inputs(grads, state, params).hypergrad(opt, None, cot)
    by_default = record.hypergrad(opt, new_state, cot)
    got = {}
    for batched, rows_in_pass in [(False, False), (True, False), (True, True)]:
        monkeypatch.setattr(one_step, "_BATCHED", batched)
        got[batched, rows_in_pass] = record.hypergrad(
            opt, new_state, cot, rows_in_pass=rows_in_pass
        )
        chex.assert_trees_all_close(
            got[batched, rows_in_pass], expected, rtol=1e-10, atol=1e-12
        )
    if jax.default_backend() == "cpu":
        chex.assert_trees_all_equal(by_default, got[False, False])
    else:  # compiled as one program there, op by op here
        chex.assert_trees_all_close(by_default, got[True, False], rtol=1e-12)


def _jacobian(state):
    record = state.saved[0]
    record = getattr(record, "record", record)  # fused: `Previous`
    return getattr(record, "record", record)  # under a warm-up: `Scaled`


def _separate_columns_run(levels, fused, layout, names):
    """A tower of `levels` with `record_layout=layout` run on the logistic
    problem; checks its level-1 record's layout and returns (params, state)."""
    scheme = ro.OneStep(fused=fused, record_layout=layout)
    tower = ro.Stack(*levels, hypergradient=scheme, warmup=3)
    params, state = _library(tower, logistic, steps=7)
    record = _jacobian(state)
    assert (record.names, record.stacked) == (names, layout == "stacked")
    if isinstance(record, one_step.Jacobian):
        assert len(record.jac) == len(jax.tree.leaves(params))  # a list of leaves
        for columns, p in zip(record.jac, jax.tree.leaves(params)):
            if layout == "stacked":
                assert columns.shape == (len(names), *p.shape)
            else:
                assert [c.shape for c in columns] == [p.shape] * len(names)
    else:  # kept gradients: the layout is how they are contracted
        assert isinstance(record, one_step.LastStep)
    return params, state


@pytest.mark.parametrize(
    "level1, names",
    [("adam", ("lr", "b1", "b2")), ("sgd_momentum", ("lr", "momentum"))],
)
@pytest.mark.parametrize("per", ["leaf", "element"])
@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_separate_columns_match_brute_force(level1, names, per, fused, monkeypatch):
    """`OneStep(record_layout="separate")` stores one array per tuned name (the
    GPU's default layout; SGD, which keeps its gradients, stacks its recomputed
    columns inside the contraction instead) and steps as the brute force does,
    in either order, with a warm-up; `"stacked"` (the CPU's) stores one array
    per leaf. Leaves here are contracted in each way: by matrix-vector products, by
    reductions (`_LARGE` at 1), and batched over leaves (`_BATCHED`, a GPU's)."""
    levels = [BY_NAME[level1].make(per), BY_NAME["adam"].make(), ro.Adam(0.01)]
    x0 = logistic.init(jax.random.key(1))
    bf = brute_force_untied(
        levels, logistic.loss, x0, 7, 3, fused=fused, shape="linear"
    )
    for contraction in ("products", "reductions", "batched"):
        if contraction == "reductions":
            monkeypatch.setattr(one_step, "_LARGE", 1)
        if contraction == "batched":  # a GPU's (`_ROW` at 2: w, 5 elements, in one
            # sum after XLA's split)
            monkeypatch.setattr(one_step, "_BATCHED", True)
            monkeypatch.setattr(one_step, "_ROW", 2)
        for layout in ("separate", "stacked"):
            params, state = _separate_columns_run(levels, fused, layout, names)
            chex.assert_trees_all_close(params, bf[0], **ADAM_TOL)
            chex.assert_trees_all_close(
                _raw_leaves(state.opts[:-1]), jax.tree.leaves(bf[1]), **ADAM_TOL
            )
    assert all(np.any(np.abs(leaf) > 0) for leaf in jax.tree.leaves(bf[2]))


def test_record_layout_follows_the_backend_unless_given():
    x = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    adam = ro.Adam(0.01, b1=ro.hyper(0.9))
    by_backend = ro.Stack[2](adam).init(x)
    assert _jacobian(by_backend).stacked == (jax.default_backend() == "cpu")
    for layout in ("stacked", "separate"):
        tower = ro.Stack[2](adam, hypergradient=ro.OneStep(record_layout=layout))
        state = tower.init(x)
        _, state = tower.update(x, state, x)  # a step keeps the layout it was given
        assert _jacobian(state).stacked == (layout == "stacked")
    # One column (the default towers' lr) is one array either way: their states
    # are the same on every backend.
    one = ro.Stack[2](ro.Adam(0.01), hypergradient=ro.OneStep(record_layout="separate"))
    state = one.init(x)
    _, state = one.update(x, state, x)
    assert _jacobian(state).stacked
    assert [j.shape for j in _jacobian(state).jac] == [(1, 3), (1, 2, 3)]
    with pytest.raises(ValueError, match="record_layout"):
        ro.OneStep(record_layout="rows")


def test_separate_columns_in_a_tied_tower_match_brute_force():
    """A tied tower's model step keeps its columns in the layout it is given."""
    opt = BY_NAME["adam"].make("leaf")
    tower = ro.Stack[3](
        opt, tie=True, hypergradient=ro.OneStep(record_layout="separate")
    )
    params, state = _library(tower, quadratic)
    assert not _jacobian(state).stacked
    bf_params, bf_h, _ = brute_force_tied(
        opt, 3, quadratic.loss, quadratic.init(None), STEPS
    )
    chex.assert_trees_all_close(params, bf_params, **ADAM_TOL)
    chex.assert_trees_all_close(
        _raw_leaves(state.opts), jax.tree.leaves(bf_h), **ADAM_TOL
    )
