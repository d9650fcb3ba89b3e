"""Bad input gets a clear error that names what is wrong."""

import jax
import jax.numpy as jnp
import optax
import pytest

import recursive_opt as ro


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: ro.SGD(lr=-0.1),
            r"SGD: hyperparameter `lr` must be > 0 under the 'log'",
        ),
        (lambda: ro.SGD(lr=0.0), r"SGD: hyperparameter `lr` must be > 0"),
        (
            lambda: ro.Adam(b1=1.0),
            r"Adam: hyperparameter `b1` must be in the open interval \(0, 1\)",
        ),
        (
            lambda: ro.Adam(b2=-0.5),
            r"Adam: hyperparameter `b2` must be in the open interval",
        ),
        (
            lambda: ro.Adam(lr=float("nan")),
            r"Adam: hyperparameter `lr` must be > 0.*got nan",
        ),
        (lambda: ro.RMSProp(decay=float("inf")), r"RMSProp: hyperparameter `decay`"),
        (lambda: ro.AdaGrad(eps=0.0), r"AdaGrad: hyperparameter `eps` must be > 0"),
        (
            lambda: ro.SGD(momentum=1.5),
            r"SGD: hyperparameter `momentum` must be in the open",
        ),
        (
            lambda: ro.SGD(lr="0.1"),
            r"SGD: hyperparameter `lr` must be a real number, got '0.1'",
        ),
        (lambda: ro.SGD(lr=None), r"SGD: hyperparameter `lr` must be a real number"),
        (
            lambda: ro.Adam(optax.constant_schedule(1e-3)),
            r"`lr` must be a real number, got the callable .* schedule is not a",
        ),
        (lambda: ro.SGD(lr=True), r"SGD: hyperparameter `lr` must be a real number"),
        (lambda: ro.SGD(lr=1 + 2j), r"SGD: hyperparameter `lr` must be a real number"),
        (lambda: ro.SGD(lr=jnp.ones(3)), r"SGD: hyperparameter `lr` must be a scalar"),
        (
            lambda: ro.SGD(lr=ro.hyper(-1.0, transform="square")),
            r"`lr` must be >= 0 under the 'square'",
        ),
        (
            lambda: ro.Adam(b1=ro.hyper(1.0, transform="tanh01")),
            r"`b1` must be in the open interval \(0, 1\) under the 'tanh01'",
        ),
        (
            lambda: ro.Adam(lr=ro.hyper(float("inf"), transform="identity")),
            r"`lr` must be any finite number",
        ),
        (
            lambda: ro.hyper(0.1, transform="exp"),
            r"Unknown transform 'exp'; choose one of",
        ),
        (lambda: ro.hyper(0.1, per="row"), r"Unknown per='row'; choose one of"),
        (lambda: ro.hyper(0.1, tune="yes"), r"`tune` must be True or False"),
        (
            lambda: ro.SGD(0.1, nesterov=True),
            r"SGD: `nesterov=True` needs a non-zero `momentum`",
        ),
        (
            lambda: ro.AdaGrad(initial_accumulator_value=-1),
            r"AdaGrad: `initial_accumulator_value` must be a number >= 0",
        ),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_identity_allows_any_finite_value():
    assert float(
        ro.SGD(lr=ro.hyper(-0.1, transform="identity")).lr.value
    ) == pytest.approx(-0.1)


@pytest.mark.parametrize("depth", [0, -2])
def test_depth_below_one(depth):
    with pytest.raises(
        ValueError, match=rf"Stack\[depth\] needs depth >= 1, got {depth}"
    ):
        ro.Stack[depth]
    with pytest.raises(ValueError, match=r"Stack needs at least one optimiser level"):
        ro.Stack()


@pytest.mark.parametrize("depth", [2.0, "3", True])
def test_depth_not_an_integer(depth):
    with pytest.raises(TypeError, match=r"Stack\[depth\] needs an integer depth"):
        ro.Stack[depth]


def test_repeat_takes_one_optimiser():
    import optax

    with pytest.raises(
        TypeError, match=r"to choose every level, list them: ro.Stack\("
    ):
        ro.Stack[2](ro.SGD(0.1), ro.SGD(0.01))
    with pytest.raises(
        TypeError, match=r"Stack\[2\]\(opt\) needs a recursive_opt optimiser"
    ):
        ro.Stack[2](optax.sgd(0.1))


def test_level_not_an_optimiser():
    import optax

    with pytest.raises(
        TypeError,
        match=r"Stack level 2 must be a recursive_opt optimiser.*got GradientTransformation",
    ):
        ro.Stack(ro.SGD(), optax.sgd(0.1))


def test_tie_needs_identical_levels():
    with pytest.raises(
        ValueError,
        match=r"Stack\(tie=True\) needs identical levels.*level 2 \(Adam\) differs from level 1 \(SGD\)",
    ):
        ro.Stack(ro.SGD(0.1), ro.Adam(1e-3), tie=True)
    with pytest.raises(
        ValueError, match=r"level 3 \(SGD\) differs from level 1 \(SGD\)"
    ):
        ro.Stack(ro.SGD(0.1), ro.SGD(0.1), ro.SGD(0.2), tie=True)
    ro.Stack(ro.SGD(0.1), ro.SGD(0.1), tie=True)  # equal values are identical


def test_tie_needs_matching_pers():
    """A tied set updates itself: a per-element value cannot act on a per-tree
    tuned hyperparameter. Said at construction, not at the first update."""
    with pytest.raises(
        ValueError, match=r"per-element hyperparameter \(momentum\).*lr is per='tree'"
    ):
        ro.Stack[2](ro.SGD(0.1, momentum=ro.hyper(0.5, per="element")), tie=True)
    with pytest.raises(ValueError, match=r"\(eps\).*b1, b2, lr are per='tree'"):
        ro.Stack[3](ro.Adam(eps=ro.hyper(1e-8, tune=False, per="leaf")), tie=True)
    # Allowed: matching pers (leaf and element mix), or untied.
    params = {"w": jnp.ones(3), "b": jnp.ones(2)}
    for tower in [
        ro.Stack[2](
            ro.SGD(ro.hyper(0.1, per="leaf"), momentum=ro.hyper(0.5, per="element")),
            tie=True,
        ),
        ro.Stack[2](ro.SGD(0.1, momentum=ro.hyper(0.5, per="element"))),
    ]:
        state = tower.init(params)
        for _ in range(2):
            updates, state = tower.update(params, state)
        assert all(jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(updates))


def test_nothing_to_tune():
    with pytest.raises(
        ValueError,
        match=r"Stack level 2 has nothing to tune: level 1 \(AdaGrad\) has no tuned",
    ):
        ro.Stack(ro.AdaGrad(ro.fixed(0.1)), ro.SGD(1e-3))


def test_grads_structure_differs_from_params():
    params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    tower = ro.Stack[2](ro.SGD(0.1))
    state = tower.init(params)
    with pytest.raises(
        ValueError, match=r"`grads` and `params` must have the same pytree structure"
    ):
        tower.update({"w": jnp.zeros((3, 2))}, state)
    with pytest.raises(
        ValueError, match=r"initialised with 2 arrays, but `grads` has 1"
    ):
        tower.update({"w": jnp.zeros((3, 2))}, state)
    with pytest.raises(
        ValueError,
        match=r"`grads\['w'\]` has shape \(2, 3\) but the parameter it belongs to has shape \(3, 2\)",
    ):
        tower.update({"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)}, state)
    with pytest.raises(
        ValueError,
        match=r"`grads\['w'\]` has shape \(2, 3\) but `params\['w'\]` has shape \(3, 2\)",
    ):
        ro.SGD().update({"w": jnp.zeros((2, 3)), "b": jnp.zeros(2)}, None, params)
    with pytest.raises(
        ValueError,
        match=r"must have the same pytree structure, got\n  grads: PyTreeDef\(\{'a'",
    ):
        tower.update({"a": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, state, params)
    opt = ro.SGD(0.1)
    with pytest.raises(ValueError, match=r"must have the same pytree structure"):
        opt.update({"w": jnp.zeros((3, 2))}, opt.init(params), params)


def test_weight_decay_needs_params():
    params = {"w": jnp.zeros(3)}
    opt = ro.Adam(1e-3, weight_decay=0.01)
    with pytest.raises(
        ValueError, match=r"Adam with weight decay needs the parameters"
    ):
        opt.update(params, opt.init(params))
    tower = ro.Stack[2](opt)
    with pytest.raises(ValueError, match=r"level 1 \(Adam\) reads the parameters"):
        tower.update(params, tower.init(params))


def test_non_float_params():
    with pytest.raises(
        TypeError,
        match=r"can only optimise floating-point arrays, but the leaf at `params\['n'\]` is int",
    ):
        ro.Stack[2](ro.SGD()).init({"w": jnp.zeros(3), "n": jnp.zeros(3, jnp.int32)})
    with pytest.raises(TypeError, match=r"the leaf at `params\['f'\]` is str"):
        ro.SGD().init({"w": jnp.zeros(3), "f": "relu"})
    with pytest.raises(ValueError, match=r"a parameter tree with no arrays"):
        ro.SGD().init({})
    with pytest.raises(
        TypeError, match=r"real arrays; the leaf at `params\['z'\]` is complex64"
    ):
        ro.Stack[2](ro.Adam()).init(
            {"w": jnp.zeros(3), "z": jnp.zeros(2, jnp.complex64)}
        )


def test_state_from_another_tower():
    params = {"w": jnp.zeros(3)}
    state = ro.Stack[2](ro.SGD()).init(params)
    with pytest.raises(ValueError, match=r"`state` was not made by this tower's init"):
        ro.Stack[3](ro.SGD()).update(params, state)
    with pytest.raises(TypeError, match=r"hyperparams needs a tower state"):
        ro.hyperparams(ro.SGD().init(params))


def test_state_from_a_tower_of_other_settings():
    """A state holds its tower's levels and `update` steps those, so a tower of
    other settings (not other values) refuses it instead of silently stepping
    the state's: another gate, weight decay, rule, transform or scheme."""
    params = {"layer": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
    grads = jax.tree.map(jnp.ones_like, params)
    tower = ro.Stack[3](ro.Adam())
    state = tower.init(params)
    gate = ro.Adam(
        0.1, b1=ro.fixed(0.5), b2=ro.fixed(0.99), clip=(-2.0, None), gate=(0.9, 100)
    )
    others = [
        (
            ro.Stack(*tower.levels[:1], gate, tower.levels[2]),
            r"level 2 .*\(gate \(0\.9, 100, 1\.0, 300\) in the state, "
            r"\(0\.9, 100\) here\)",
        ),
        (ro.Stack[3](ro.Adam(weight_decay=1e-4)), r"level 1 .*uses_params False"),
        (ro.Stack[3](ro.SGD(0.1, momentum=0.9)), r"level 1 .*\(Adam in the state, SGD"),
        (
            ro.Stack[3](ro.Adam(ro.hyper(1e-3, transform="identity"))),
            r"level 1 .*lr log transform, tuned, per='layer' in the state, "
            r"identity transform",
        ),
        (
            ro.Stack[3](ro.Adam(ro.hyper(1e-3, per="layer", bounds=(None, 0.1)))),
            r"level 1 .*per='layer' in the state, log transform, tuned, "
            r"per='layer', bounds=\(None, 0\.1\) here",
        ),
        (
            ro.Stack[3](ro.Adam(), hypergradient=ro.OneStep(fused=True)),
            r"hypergradient scheme .*\(fused False in the state, True here\)",
        ),
    ]
    for other, match in others:
        with pytest.raises(
            ValueError, match=r"`state` was made by a tower whose " + match
        ):
            other.update(grads, state, params)
    # Other initial values are the same settings (the default ceiling, (None, 3.0)
    # for a start of 3, follows the start): the state's values are stepped.
    same = ro.Stack[3](ro.Adam(3.0))
    updates, _ = jax.jit(same.update)(grads, state, params)
    expected, _ = jax.jit(tower.update)(grads, state, params)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, updates, expected))


def test_grads_of_another_structure_name_the_structure():
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    tower = ro.Stack[2](ro.Adam())
    state = tower.init(params)
    # Dict leaves flatten in key order (b, w): a list in another order pairs each
    # gradient with another parameter.
    with pytest.raises(
        ValueError,
        match=r"(?s)`grads\[0\]` has shape \(3, 2\), but it is matched with "
        r"`params\['b'\]` of shape \(2,\).*params: PyTreeDef\(\{'b'.*grads: PyTreeDef\(\[",
    ):
        tower.update([jnp.ones((3, 2)), jnp.ones(2)], state)
    with pytest.raises(
        ValueError, match=r"`grads\['b'\]` has shape \(3, 2\) but the parameter it"
    ):
        tower.update({"w": jnp.ones(2), "b": jnp.ones((3, 2))}, state)


def test_an_optimiser_field_that_is_not_an_array_is_named():
    class Warm(ro.Adam):
        warmup: int  # should be eqx.field(static=True)

        def __init__(self, lr, warmup):
            super().__init__(lr)
            self.warmup = warmup

    with pytest.raises(TypeError, match=r"level 1 \(Warm\).*50.*\.warmup.*static"):
        ro.Stack(Warm(0.1, 50), ro.Adam(0.01)).init({"w": jnp.ones(2)})
