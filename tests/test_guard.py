"""The divergence guard: skipped steps, stopping, and bounds on hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recursive_opt as ro
from recursive_opt._guard import bound, normalise_bounds

from .test_fit import QUAD, batches, linear_loss, linear_params


def poisoned(n_batches, bad):
    """The batches of `batches(n)`, with NaN inputs at the steps in `bad`."""
    for i, (x, y) in enumerate(batches(n_batches)):
        yield (np.full_like(x, np.nan), y) if i in bad else (x, y)


def test_nonfinite_steps_are_skipped_exactly():
    tower = ro.Stack[2](ro.Adam(0.05))
    bad = {3, 4, 9}
    res = ro.fit(
        linear_loss,
        linear_params(),
        tower,
        poisoned(12, bad),
        steps=12,
        log_every=4,
        progress=False,
    )
    # The same run without the poisoned batches: identical parameters and state.
    clean = (b for i, b in enumerate(batches(12)) if i not in bad)
    ref = ro.fit(
        linear_loss, linear_params(), tower, clean, steps=9, log_every=3, progress=False
    )
    assert res.skipped == 3
    np.testing.assert_array_equal(res.history["skipped"], [1, 2, 3])
    for a, b in zip(
        jax.tree.leaves((res.params, res.state)),
        jax.tree.leaves((ref.params, ref.state)),
    ):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(res.params))


def test_stop_raises_naming_the_step_and_keeps_the_last_good_state():
    tower = ro.Stack[2](ro.SGD(0.05))
    with pytest.raises(ro.DivergenceError, match=r"Step 5 \(counting from 0\)") as info:
        ro.fit(
            linear_loss,
            linear_params(),
            tower,
            poisoned(12, {5}),
            steps=12,
            log_every=4,
            on_nonfinite="stop",
            progress=False,
        )
    assert info.value.step == 5
    # The state after steps 0-4: a clean 5-step run's with the same guard and
    # chunk size (so compiled alike: bit for bit under the tests' compile flags
    # too, where a run without them differs in the last bit).
    ref = ro.fit(
        linear_loss,
        linear_params(),
        tower,
        batches(5),
        steps=5,
        log_every=4,
        on_nonfinite="stop",
        progress=False,
    )
    for a, b in zip(
        jax.tree.leaves(info.value.result.params), jax.tree.leaves(ref.params)
    ):
        np.testing.assert_array_equal(a, b)


def test_ignore_lets_nans_through():
    res = ro.fit(
        linear_loss,
        linear_params(),
        ro.SGD(0.05),
        poisoned(4, {1}),
        steps=4,
        on_nonfinite="ignore",
        progress=False,
    )
    assert np.isnan(res.params["w"]).all() and res.skipped == 0


def test_divergence_is_kept_finite_by_the_guard():
    # A learning rate far too large for this quadratic: the loss overflows, then
    # every step is skipped, and fit says so (few skips are silent: see above).
    with pytest.warns(UserWarning, match=r"of 40 steps were skipped"):
        res = ro.fit(
            linear_loss,
            linear_params(),
            ro.SGD(1e3, momentum=0.9),
            QUAD.train,
            steps=40,
            batch_size=32,
            log_every=10,
            progress=False,
        )
    assert res.skipped > 20
    assert all(np.isfinite(x).all() for x in jax.tree.leaves((res.params, res.state)))


def test_bounds_keep_hyperparameters_in_range():
    # An upper level with a large lr drives level 1's lr up quickly.
    tower = ro.Stack(ro.SGD(0.01), ro.SGD(30.0))

    def fit(steps, bounds=None):
        return ro.fit(
            linear_loss,
            linear_params(),
            tower,
            QUAD.train,
            steps=steps,
            batch_size=32,
            log_every=1,
            bounds=bounds,
            progress=False,
        )

    assert fit(30).history["level1/lr"].max() > 0.05
    res = fit(30, bounds=[{"lr": (1e-3, 0.05)}, None])
    lr = res.history["level1/lr"]
    assert lr.max() == pytest.approx(0.05, rel=1e-6) and lr.min() >= 1e-3 * (1 - 1e-6)
    np.testing.assert_allclose(res.history["level2/lr"], 30.0, rtol=1e-6)
    # A dict bounds every level: level 2's lr of 30 is clamped too.
    res = fit(3, bounds={"lr": (None, 0.05)})
    np.testing.assert_allclose(res.history["level2/lr"], 0.05, rtol=1e-6)


def test_bounds_keep_the_towers_other_settings():
    # Bounds that never bind leave the run as it was: the default tower's
    # warm-up (and its shape) and scheme are kept. In float64: the two runs are
    # two compiled programs (one clips), and XLA may round a float32 value of
    # one differently in its last bit.
    tower = ro.Stack[2](ro.Adam(1e-2), warmup_shape="linear")
    wide = {"lr": (1e-9, 1e3)}
    params = jax.tree.map(lambda x: x.astype(jnp.float64), linear_params())

    def fit(bounds):
        return ro.fit(
            linear_loss,
            params,
            tower,
            QUAD.train,
            steps=12,
            batch_size=32,
            log_every=4,
            bounds=bounds,
            progress=False,
        )

    free, bounded = fit(None), fit(wide)
    for k in free.history:
        np.testing.assert_allclose(bounded.history[k], free.history[k], err_msg=k)
    for k in free.params:
        np.testing.assert_allclose(bounded.params[k], free.params[k], err_msg=k)
    kept = bound(tower, normalise_bounds(wide, tower))
    assert (kept.warmup, kept.warmup_shape, kept.hypergradient) == (
        tower.warmup,
        tower.warmup_shape,
        tower.hypergradient,
    )


@pytest.mark.parametrize("transform", ["log", "logit", "identity", "square", "tanh01"])
def test_bounds_land_exactly_on_the_bound(transform):
    # One lr (declared): this test is about momentum's bounds.
    tower = ro.Stack[2](
        ro.SGD(ro.hyper(0.3), momentum=ro.hyper(0.6, transform=transform))
    )

    def init(pair):
        bounds = normalise_bounds({"momentum": pair}, tower)
        return bound(tower, bounds).init(linear_params())

    (h, _) = ro.hyperparams(init((0.1, 0.5)))
    np.testing.assert_allclose(h["momentum"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(h["lr"], 0.3, rtol=1e-6)  # untouched
    state = init((0.7, 0.9))
    np.testing.assert_allclose(ro.hyperparams(state)[0]["momentum"], 0.7, rtol=1e-6)
    # Values set from outside (ro.sweep's `over`) are moved into the bounds too.
    state = state.set_hyperparams(1, {"momentum": 0.95, "lr": 0.2})
    np.testing.assert_allclose(ro.hyperparams(state)[0]["momentum"], 0.9, rtol=1e-6)
    np.testing.assert_allclose(ro.hyperparams(state)[0]["lr"], 0.2, rtol=1e-6)


def _ones_problem():
    x, y = jnp.ones((4, 3)), jnp.zeros(4)

    def loss(p, batch):
        return jnp.mean((batch[0] @ p["w"] - batch[1] - 1) ** 2)

    return loss, (x, y)


@pytest.mark.parametrize("upper_lr", [100.0, 1e3])
def test_the_model_never_steps_with_an_out_of_range_value(upper_lr):
    """The level above drives level 1's lr far past its bound at once: every model
    step must already use the bounded value (the history records the lr used)."""
    loss, data = _ones_problem()
    res = ro.fit(
        loss,
        {"w": jnp.zeros(3)},
        ro.Stack(ro.SGD(0.01), ro.SGD(upper_lr)),
        data,
        steps=3,
        batch_size=4,
        log_every=1,
        bounds=[{"lr": (None, 0.05)}, None],
        progress=False,
    )
    lrs = res.history["level1/lr"]
    assert np.all(lrs <= 0.05 * (1 + 1e-6)) and lrs.max() == pytest.approx(0.05)
    w = {"w": jnp.zeros(3)}
    for lr in lrs:  # plain SGD at the recorded learning rates
        w = jax.tree.map(lambda p, g, lr=lr: p - lr * g, w, jax.grad(loss)(w, data))
    np.testing.assert_allclose(res.params["w"], w["w"], rtol=1e-6)
    assert np.all(np.abs(res.params["w"]) < 1)


@pytest.mark.parametrize("tie", [False, True])
def test_declared_bounds_hold_at_every_step(tie):
    lr = ro.hyper(0.01, bounds=(0.005, 0.02))
    opt = ro.SGD(lr, momentum=0.5)
    tower = ro.Stack[3](opt, tie=True) if tie else ro.Stack(opt, ro.Adam(0.5))
    loss, data = _ones_problem()
    params = {"w": jnp.zeros(3)}
    state = tower.init(params)
    seen = []
    for _ in range(8):
        grads = jax.grad(loss)(params, data)
        updates, state = tower.update(grads, state, params)
        used = float(ro.hyperparams(state)[0]["lr"])
        seen.append(used)
        assert 0.005 * (1 - 1e-6) <= used <= 0.02 * (1 + 1e-6)
        params = ro.apply_updates(params, updates)
    assert max(seen) > 0.01 or min(seen) < 0.01  # the lr did move


def test_declared_bound_errors():
    with pytest.raises(ValueError, match="outside its bounds"):
        ro.SGD(ro.hyper(0.1, bounds=(1e-3, 0.05)))
    with pytest.raises(ValueError, match="low < high"):
        ro.hyper(0.1, bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="must be a pair"):
        ro.hyper(0.1, bounds=0.5)


def test_bound_errors():
    tower = ro.Stack[3](ro.SGD(0.1), tie=True)
    with pytest.raises(ValueError, match="tied tower"):
        normalise_bounds([{"lr": (0, 1)}] * 3, tower)
    with pytest.raises(ValueError, match="finite"):
        normalise_bounds({"lr": (0, jnp.inf)}, tower)
    with pytest.raises(ValueError, match="pair"):
        normalise_bounds({"lr": 0.1}, tower)
