"""The catalogue (optimisers x problems) and the brute-force hypergradient chain."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import recursive_opt as ro
from recursive_opt._hyper import resolve, tuned_raw, with_raw

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


def _upd(opt, raw, consts):
    g, s, p = consts
    return with_raw(opt, raw).update(sg(g), sg(s), sg(p))[0]


def brute_force_untied(levels, loss, x, steps):
    """Returns (params, [raw hyperparameters of levels 1..d-1], [G_2..G_d of the last
    step])."""
    d = len(levels)
    opts, target = [], x
    for level in levels:
        opts.append(resolve(level, target))
        target = tuned_raw(opts[-1])
    hs = [tuned_raw(o) for o in opts[:-1]]
    states = [opts[0].init(x)] + [opts[k].init(hs[k - 1]) for k in range(1, d)]
    consts = None
    for _ in range(steps):
        g = jax.grad(loss)(x)
        if consts is None:
            upper = [jax.tree.map(jnp.zeros_like, h) for h in hs]
        else:
            upper = jax.grad(_untied_objective)(
                [jax.tree.map(jnp.zeros_like, h) for h in hs], opts, hs, consts, loss
            )
        G = [g] + upper
        consts = [None] * d
        new_hs = list(hs)
        for k in reversed(range(d)):
            opt = opts[k] if k == d - 1 else with_raw(opts[k], new_hs[k])
            target = x if k == 0 else new_hs[k - 1]
            u, new_state = opt.update(G[k], states[k], target)
            consts[k] = (G[k], states[k], target)
            states[k] = new_state
            if k == 0:
                x = ro.apply_updates(x, u)
            else:
                new_hs[k - 1] = ro.apply_updates(target, u)
        hs = new_hs
    return x, hs, G[1:]


def _untied_objective(eps, opts, hs, consts, loss):
    d = len(opts)
    h = [None] * (d - 1)
    h[d - 2] = jax.tree.map(jnp.add, hs[d - 2], eps[d - 2])
    for k in range(d - 2, 0, -1):  # level k+1 moved h[k-1] with hyperparameters h[k]
        u = _upd(opts[k], h[k], consts[k])
        h[k - 1] = jax.tree.map(
            lambda p, u, e: p + u + e, sg(consts[k][2]), u, eps[k - 1]
        )
    u = _upd(opts[0], h[0], consts[0])
    return loss(jax.tree.map(jnp.add, sg(consts[0][2]), u))


def brute_force_tied(opt, depth, loss, x, steps):
    """Returns (params, shared raw hyperparameters, summed hypergradient of the last
    step)."""
    opt = resolve(opt, x)
    h = tuned_raw(opt)
    s_x, s_h = opt.init(x), opt.init(h)
    c_model = c_self = None
    for _ in range(steps):
        g = jax.grad(loss)(x)
        if c_model is None:
            total = jax.tree.map(jnp.zeros_like, h)
        else:
            total = jax.grad(_tied_objective)(h, opt, depth, c_model, c_self, loss)
        u_h, new_s_h = with_raw(opt, h).update(total, s_h, h)
        c_self, s_h = (total, s_h, h), new_s_h
        h = ro.apply_updates(h, u_h)
        u, new_s_x = with_raw(opt, h).update(g, s_x, x)
        c_model, s_x = (g, s_x, x), new_s_x
        x = ro.apply_updates(x, u)
    return x, h, total


def _tied_objective(h, opt, depth, c_model, c_self, loss):
    a = h
    for _ in range(depth - 2):  # value stays h; derivative I + J + J^2 + ...
        a = jax.tree.map(
            lambda h, u, u0: h + u - sg(u0),
            h,
            _upd(opt, a, c_self),
            _upd(opt, h, c_self),
        )
    u = _upd(opt, a, c_model)
    return loss(jax.tree.map(jnp.add, sg(c_model[2]), u))
