"""The catalogue (optimisers x problems) and the brute-force hypergradient chain."""

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import recursive_opt as ro
from recursive_opt._hyper import hyper_fields

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    make: Callable[..., ro.AbstractOptimiser]  # make(per="tree")
    optax_equiv: optax.GradientTransformation


def _h(v, per):
    return ro.hyper(v, per=per)


CATALOGUE = [
    Entry("sgd", lambda per="tree": ro.SGD(_h(0.05, per)), optax.sgd(0.05)),
    Entry(
        "sgd_momentum",
        lambda per="tree": ro.SGD(_h(0.02, per), momentum=_h(0.9, per)),
        optax.sgd(0.02, momentum=0.9),
    ),
    Entry(
        "sgd_nesterov",
        lambda per="tree": ro.SGD(_h(0.02, per), momentum=_h(0.8, per), nesterov=True),
        optax.sgd(0.02, momentum=0.8, nesterov=True),
    ),
    Entry(
        "adam",
        lambda per="tree": ro.Adam(_h(0.02, per), b1=_h(0.9, per), b2=_h(0.99, per)),
        optax.adam(0.02, b1=0.9, b2=0.99),
    ),
    Entry(
        "adamw",
        lambda per="tree": ro.Adam(
            _h(0.02, per), b1=_h(0.8, per), b2=_h(0.99, per), weight_decay=0.1
        ),
        optax.adamw(0.02, b1=0.8, b2=0.99, weight_decay=0.1),
    ),
    Entry(
        "rmsprop",
        lambda per="tree": ro.RMSProp(_h(0.01, per), decay=_h(0.9, per)),
        optax.rmsprop(0.01, decay=0.9, eps=1e-8),
    ),
    Entry(
        "adagrad",
        lambda per="tree": ro.AdaGrad(_h(0.1, per)),
        optax.adagrad(0.1, eps=1e-10),
    ),
]
CATALOGUE_IDS = [e.name for e in CATALOGUE]
BY_NAME = {e.name: e for e in CATALOGUE}


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    loss: Callable
    init: Callable  # init(key) -> params


def _quadratic():
    scales = {"w": jnp.linspace(0.5, 2.0, 6).reshape(3, 2), "b": jnp.array([1.0, 3.0])}
    centre = {"w": jnp.arange(6.0).reshape(3, 2) / 6, "b": jnp.array([-1.0, 0.5])}

    def loss(p):
        sq = jax.tree.map(lambda x, a, c: jnp.sum(a * (x - c) ** 2), p, scales, centre)
        return 0.5 * sum(jax.tree.leaves(sq))

    return Problem(
        "quadratic", loss, lambda key: {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
    )


def _logistic():
    kx, kw = jr.split(jr.key(0))
    x = jr.normal(kx, (64, 5))
    y = (x @ jr.normal(kw, (5,)) > 0).astype(jnp.float64)

    def loss(p):
        logits = x @ p["w"] + p["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    return Problem(
        "logistic",
        loss,
        lambda key: {"w": 0.1 * jr.normal(key, (5,)), "b": jnp.zeros(())},
    )


PROBLEMS = [_quadratic(), _logistic()]
PROBLEM_IDS = [p.name for p in PROBLEMS]


def copies(depth, opt, tie=False):
    """A tower of `depth` copies of `opt` (`Stack[d]` puts default levels above)."""
    return ro.Stack(*[opt] * depth, tie=tie)


def run_tower(tower, loss, params, steps):
    """Train with a jitted step; returns (params, state, losses)."""
    state = tower.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tower.update(grads, state, params)
        return ro.apply_updates(params, updates), state, value

    losses = []
    for _ in range(steps):
        params, state, value = step(params, state)
        losses.append(value)
    return params, state, jnp.stack(losses)


# --- Brute force: step t-1 written out as a function of the hyperparameters, with
# stop_gradient on everything the chain holds constant, differentiated by jax.grad.
# The rules, transforms and per-leaf/element layouts are written again here in plain
# JAX, independently of the library: only the declarations (initial raw value,
# transform, tune, per) and structural options are read from its optimisers.

FORWARD = {
    "log": jnp.exp,
    "logit": jax.nn.sigmoid,
    "identity": lambda r: r,
    "square": jnp.square,
    "tanh01": lambda r: (jnp.tanh(r) + 1) / 2,
}


@dataclasses.dataclass(frozen=True)
class Plain:
    """An optimiser as plain data: its kind, options and hyperparameter declarations
    `name -> (raw, transform, tune, per)`."""

    kind: str
    options: dict
    hypers: dict


def plain(opt) -> Plain:
    hypers = {
        n: (h.raw, h.transform, h.tune, h.per) for n, h in hyper_fields(opt).items()
    }
    options = {
        "nesterov": getattr(opt, "nesterov", False),
        "acc0": getattr(opt, "initial_accumulator_value", None),
        "normalise": getattr(opt, "normalise", None),
        "clip": getattr(opt, "clip", None),
        "gate": getattr(opt, "gate", None),
    }
    return Plain(type(opt).__name__, options, hypers)


def _laid(raw, per, target):
    """A declaration's raw value laid over the tree it acts on."""
    if per == "tree":
        return raw
    if per == "layer":
        # One value per layer. Written for trees whose arrays sit directly under
        # the root, where each is a layer of its own (tests/test_per_layer.py
        # checks layers of several arrays).
        paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(target)[0]]
        assert all(len(p) == 1 for p in paths), "nested layers: not written here"
        per = "leaf"
    if per == "leaf":
        return jax.tree.map(lambda t: jnp.asarray(raw, t.dtype), target)
    return jax.tree.map(lambda t: jnp.full(t.shape, raw, t.dtype), target)


def plain_raw(opt: Plain, target):
    """(tuned raw values, fixed raw values), each `name -> raw`, laid over `target`."""
    tuned, fixed = {}, {}
    for n, (raw, _, tune, per) in opt.hypers.items():
        (tuned if tune else fixed)[n] = _laid(raw, per, target)
    return tuned, fixed


def _over(value, target):
    """`value` (scalar, tree like `target`, or tree like each entry of a dict
    `target`) as one array per leaf of `target`."""
    if not isinstance(value, (dict, list)) and jnp.ndim(value) == 0:
        return jax.tree.map(lambda t: jnp.broadcast_to(value, t.shape), target)
    if jax.tree.structure(value) == jax.tree.structure(target):
        return jax.tree.map(lambda v, t: jnp.broadcast_to(v, t.shape), value, target)
    return {k: _over(value, t) for k, t in target.items()}


def plain_init(opt: Plain, target):
    zeros = jax.tree.map(jnp.zeros_like, target)
    if opt.kind == "SGD":
        return zeros if "momentum" in opt.hypers else None
    if opt.kind == "Adam":
        gate = opt.options["gate"]
        signal = (zeros, zeros) if gate is not None and len(gate) >= 3 else zeros
        return (0, zeros, zeros, zeros, signal)
    if opt.kind == "RMSProp":
        return zeros
    return jax.tree.map(lambda t: jnp.full_like(t, opt.options["acc0"]), target)


def plain_update(opt: Plain, raw, g, s, p):
    """One step at raw hyperparameters `raw` (every name): (updates, new state)."""
    hp = {}
    for n, (_, transform, _, _) in opt.hypers.items():
        hp[n] = _over(jax.tree.map(FORWARD[transform], raw[n]), g)

    def each(fn, *trees):
        return jax.tree.map(fn, *trees)

    lr = hp["lr"]
    if opt.kind == "SGD":
        if "momentum" not in hp:
            return each(lambda g, a: -a * g, g, lr), None
        m = hp["momentum"]
        trace = each(lambda g, t, m: g + m * t, g, s, m)
        d = (
            each(lambda g, t, m: g + m * t, g, trace, m)
            if opt.options["nesterov"]
            else trace
        )
        return each(lambda d, a: -a * d, d, lr), trace
    if opt.kind == "Adam":
        count, mu, nu, scale, signal = s
        t = count + 1
        b1, b2, eps = hp["b1"], hp["b2"], hp["eps"]
        decay = opt.options["normalise"]
        if decay is not None:  # g over the running mean of |g|, bias-corrected
            scale = each(lambda g, a: (1 - decay) * jnp.abs(g) + decay * a, g, scale)
            g = each(
                lambda g, a: jnp.where(a > 0, g / jnp.where(a > 0, a, 1.0), 0.0),
                g,
                each(lambda a: a / (1 - decay**t), scale),
            )
        mu = each(lambda g, m, b: (1 - b) * g + b * m, g, mu, b1)
        nu = each(lambda g, v, b: (1 - b) * g * g + b * v, g, nu, b2)

        def root(v):  # derivative 0 at 0, as documented (not infinity)
            return jnp.where(v > 0, jnp.sqrt(jnp.where(v > 0, v, 1.0)), 0.0)

        def direction(m, v, b1, b2, eps):
            return (m / (1 - b1**t)) / (root(v / (1 - b2**t)) + eps)

        d = each(direction, mu, nu, b1, b2, eps)
        if (c := opt.options["clip"]) is not None:
            low, high = c if isinstance(c, tuple) else (-c, c)
            d = each(lambda d: jnp.clip(d, low, high), d)
        if (gate := opt.options["gate"]) is not None:  # raises times min(1, r)
            decay, after = gate[:2]
            ema = lambda c: lambda g, a: (1 - c) * g + c * a  # noqa: E731
            short = signal if len(gate) == 2 else signal[0]
            short = each(ema(decay), g, short)

            def gated(d, a, v, b2):
                v_hat = v / (1 - b2**t)
                safe = jnp.where(v_hat > 0, v_hat, 1.0)
                r = jnp.where(v_hat > 0, (a / (1 - decay**t)) ** 2 / safe, 0.0)
                return jnp.where((d < 0) & (t > after), d * jnp.minimum(r, 1.0), d)

            if len(gate) == 2:
                signal = short
                d = each(gated, d, short, nu, b2)
            else:  # and cuts times min(1, t^2 / z^2), t the long mean's test
                z, c = gate[2], 1 - 1 / after
                cuts_from = gate[3] if len(gate) == 4 else after
                signal = (short, each(ema(c), g, signal[1]))

                def tested(d, a, mean, v, b2):
                    d = gated(d, a, v, b2)
                    v_hat, l_hat = v / (1 - b2**t), mean / (1 - c**t)
                    var = (v_hat - l_hat**2) * (1 - c) / (1 + c)  # the mean's
                    sure = var <= 0
                    t2 = l_hat**2 / jnp.where(sure, 1.0, var)
                    f = jnp.where(sure, 1.0, jnp.minimum(t2 / z**2, 1.0))
                    f = jnp.where(l_hat > 0, f, 0.0)
                    return jnp.where((d > 0) & (t > cuts_from), d * f, d)

                d = each(tested, d, short, signal[1], nu, b2)
        if "weight_decay" in hp:
            d = each(lambda d, p, w: d + w * p, d, p, hp["weight_decay"])
        return each(lambda d, a: -a * d, d, lr), (t, mu, nu, scale, signal)
    if opt.kind == "RMSProp":
        nu = each(lambda g, v, b: (1 - b) * g * g + b * v, g, s, hp["decay"])
        u = each(lambda g, v, e, a: -a * g / jnp.sqrt(v + e), g, nu, hp["eps"], lr)
        return u, nu
    acc = each(lambda g, a: g * g + a, g, s)
    u = each(
        lambda g, a, e, r: jnp.where(a > 0, -r * g / jnp.sqrt(a + e), 0.0),
        g,
        acc,
        hp["eps"],
        lr,
    )
    return u, acc


def _upd(opt: Plain, tuned, fixed, consts):
    g, s, p = consts
    return plain_update(opt, {**fixed, **tuned}, sg(g), sg(s), sg(p))[0]


def _untied_start(levels, x):
    """(plain levels, tuned raw values of levels 1..d-1, fixed raw values, the
    top level's tuned values, initial states)."""
    d = len(levels)
    opts = [plain(o) for o in levels]
    hs, fixed, target = [], [], x
    for opt in opts:
        tuned, fix = plain_raw(opt, target)
        hs.append(tuned)
        fixed.append(fix)
        target = tuned
    top = hs.pop()  # the top level's tuned values never change
    states = [plain_init(opts[0], x)] + [
        plain_init(opts[k], hs[k - 1]) for k in range(1, d)
    ]
    return opts, hs, fixed, top, states


def warmup_factor(t: int, warmup: int, shape: str) -> float:
    """Level 1's step t (from 0) is multiplied by this: min(1, (t + 1) / warmup)
    ("linear") or warmup ** (min(1, (t + 1) / warmup) - 1) ("geometric")."""
    if not warmup:
        return 1.0
    frac = min(1.0, (t + 1) / warmup)
    return frac if shape == "linear" else float(warmup) ** (frac - 1.0)


def brute_force_untied(levels, loss, x, steps, warmup=0, fused=False, shape="linear"):
    """Returns (params, [raw hyperparameters of levels 1..d-1], [G_2..G_d of the last
    step]). With `warmup` > 0, level 1's step t (from 0) is multiplied by
    `warmup_factor(t, warmup, shape)`. With `fused`, level 1 steps before the
    levels above move its hyperparameters (`OneStep(fused=True)`)."""
    if fused:
        return _brute_force_fused(levels, loss, x, steps, warmup, shape)
    d = len(levels)
    opts, hs, fixed, top, states = _untied_start(levels, x)
    consts, ramp = None, 1.0
    for t in range(steps):
        g = jax.grad(loss)(x)
        if consts is None:
            upper = [jax.tree.map(jnp.zeros_like, h) for h in hs]
        else:
            upper = jax.grad(_untied_objective)(
                [jax.tree.map(jnp.zeros_like, h) for h in hs],
                opts,
                hs,
                fixed,
                consts,
                loss,
                ramp,
            )
        ramp = warmup_factor(t, warmup, shape)
        G = [g] + upper
        consts = [None] * d
        new_hs = list(hs)
        for k in reversed(range(d)):
            tuned = top if k == d - 1 else new_hs[k]
            target = x if k == 0 else new_hs[k - 1]
            u, new_state = plain_update(
                opts[k], {**fixed[k], **tuned}, G[k], states[k], target
            )
            consts[k] = (G[k], states[k], target)
            states[k] = new_state
            if k == 0:
                x = ro.apply_updates(x, jax.tree.map(lambda v: ramp * v, u))
            else:
                new_hs[k - 1] = ro.apply_updates(target, u)
        hs = new_hs
    return x, hs, G[1:]


def _untied_objective(eps, opts, hs, fixed, consts, loss, ramp=1.0):
    d = len(opts)
    h = [None] * (d - 1)
    h[d - 2] = jax.tree.map(jnp.add, hs[d - 2], eps[d - 2])
    for k in range(d - 2, 0, -1):  # level k+1 moved h[k-1] with hyperparameters h[k]
        if consts[k] is None:  # it had not stepped (fused order): the initial h
            h[k - 1] = jax.tree.map(jnp.add, hs[k - 1], eps[k - 1])
            continue
        u = _upd(opts[k], h[k], fixed[k], consts[k])
        h[k - 1] = jax.tree.map(
            lambda p, u, e: p + u + e, sg(consts[k][2]), u, eps[k - 1]
        )
    u = _upd(opts[0], h[0], fixed[0], consts[0])
    return loss(jax.tree.map(lambda p, v: p + ramp * v, sg(consts[0][2]), u))


def _brute_force_fused(levels, loss, x, steps, warmup, shape):
    # Level 1's step t-1 was taken with the hyperparameters the levels above made
    # at step t-2 (or the initial ones): G_2..G_d differentiate that path.
    d = len(levels)
    opts, hs, fixed, top, states = _untied_start(levels, x)
    # (hyperparameters, level-1 consts, upper consts) of the previous step, and
    # the upper consts before it (None: no level above had stepped yet).
    prev, upper_before, ramp = None, None, 1.0
    for t in range(steps):
        g = jax.grad(loss)(x)
        zeros = [jax.tree.map(jnp.zeros_like, h) for h in hs]
        if prev is None:
            upper = zeros
        else:
            hs_then, c0, _ = prev
            upper = jax.grad(_untied_objective)(
                zeros, opts, hs_then, fixed, [c0] + upper_before, loss, ramp
            )
        ramp = warmup_factor(t, warmup, shape)
        G = [g] + upper
        u, new_state = plain_update(opts[0], {**fixed[0], **hs[0]}, g, states[0], x)
        c0 = (g, states[0], x)
        states[0] = new_state
        x = ro.apply_updates(x, jax.tree.map(lambda v: ramp * v, u))
        consts = [None] * d
        new_hs = list(hs)
        for k in reversed(range(1, d)):
            tuned = top if k == d - 1 else new_hs[k]
            target = new_hs[k - 1]
            u, new_state = plain_update(
                opts[k], {**fixed[k], **tuned}, G[k], states[k], target
            )
            consts[k] = (G[k], states[k], target)
            states[k] = new_state
            new_hs[k - 1] = ro.apply_updates(target, u)
        upper_before = prev[2] if prev is not None else [None] * (d - 1)
        prev = (hs, c0, consts[1:])
        hs = new_hs
    return x, hs, G[1:]


def brute_force_tied(opt, depth, loss, x, steps):
    """Returns (params, shared raw hyperparameters, summed hypergradient of the last
    step)."""
    opt = plain(opt)
    h, fixed = plain_raw(opt, x)
    s_x, s_h = plain_init(opt, x), plain_init(opt, h)
    c_model = c_self = None
    for _ in range(steps):
        g = jax.grad(loss)(x)
        if c_model is None:
            total = jax.tree.map(jnp.zeros_like, h)
        else:
            total = jax.grad(_tied_objective)(
                h, opt, fixed, depth, c_model, c_self, loss
            )
        u_h, new_s_h = plain_update(opt, {**fixed, **h}, total, s_h, h)
        c_self, s_h = (total, s_h, h), new_s_h
        h = ro.apply_updates(h, u_h)
        u, new_s_x = plain_update(opt, {**fixed, **h}, g, s_x, x)
        c_model, s_x = (g, s_x, x), new_s_x
        x = ro.apply_updates(x, u)
    return x, h, total


def _tied_objective(h, opt, fixed, depth, c_model, c_self, loss):
    a = h
    for _ in range(depth - 2):  # value stays h; derivative I + J + J^2 + ...
        a = jax.tree.map(
            lambda h, u, u0: h + u - sg(u0),
            h,
            _upd(opt, a, fixed, c_self),
            _upd(opt, h, fixed, c_self),
        )
    u = _upd(opt, a, fixed, c_model)
    return loss(jax.tree.map(jnp.add, sg(c_model[2]), u))


def forward_mode_jacobian(opt, grads, state, params, hp, names):
    """`opt.rule`, and its columns d updates / d hp[name] by forward mode, one name
    at a time (elementwise rules: a ones tangent gives each coordinate's own)."""
    columns, out = {}, None
    for name in names:
        ones = jax.tree.map(jnp.ones_like, hp[name])

        def rule_at(value, name=name):
            return opt.rule(grads, state, params, {**hp, name: value})

        out, (columns[name], _) = jax.jvp(rule_at, (hp[name],), (ones,))
    if out is None:
        out = opt.rule(grads, state, params, hp)
    return *out, columns


def subprocess_env(**extra) -> dict:
    """The environment of a fresh Python process: this one's, with XLA_FLAGS
    reset to conftest.py's compile-time flags (the process sets any others, such
    as a device count, itself), and `extra`."""
    return {**os.environ, "XLA_FLAGS": os.environ.get("RO_TEST_XLA_FLAGS", ""), **extra}


def x64(on: bool):
    """A context with x64 on or off (the suite runs with it on):
    `jax.enable_x64` since jax 0.7, `jax.experimental.enable_x64` before."""
    context = getattr(jax, "enable_x64", None)
    if context is None:
        from jax.experimental import enable_x64 as context
    return context(on)
