"""Real-time (forward-mode) hypergradients: `RealTime`, and the tangent
propagation that `Unrolled` shares."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree

from .._custom_types import HyperParams
from .._hyper import (
    broadcast,
    broadcast_values,
    cast_like,
    hyper_fields,
    tuned_raw,
    with_raw,
)
from .._optimiser import AbstractOptimiser
from ._base import AbstractHypergradient
from .one_step import OneStep, scaled


class Tangent(eqx.Module):
    """Z = d (θ, s) / d h: the derivative of the parameters and of level 1's
    optimiser state with respect to each of its raw tuned hyperparameters.

    Per name, `params` is shaped like the parameters. For a hyperparameter with
    one value per layer, leaf or element (only without curvature) it is the
    elementwise derivative of each coordinate with respect to its own value (a
    layer's hypergradient then sums its leaves', as for one array).
    `state` holds the tangents of the state's floating-point leaves.
    """

    params: dict[str, list[Array]]
    state: dict[str, tuple[Array, ...]]


def _inexact(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def one_tangent_each(opt, scheme: str, instead: str) -> None:
    """Raise a `ValueError` if level 1 `opt` tunes a hyperparameter with more than
    one value: `scheme` carries one tangent of the parameters per tuned value."""
    many = [
        f"{n} (per={h.per!r})"
        for n, h in sorted(hyper_fields(opt).items())
        if h.tune and h.per != "tree"
    ]
    if many:
        raise ValueError(
            f"{scheme} carries one tangent of the parameters per tuned value; level "
            f"1 ({type(opt).__name__}) tunes {', '.join(many)}. Declare them with "
            f"per='tree', or use {instead}."
        )


def zero_tangent(opt: AbstractOptimiser, params, state) -> Tangent:
    names = tuple(tuned_raw(opt))
    leaves = [x for x in jax.tree.leaves(state) if _inexact(x)]
    zeros = lambda xs: jax.tree.map(jnp.zeros_like, xs)  # noqa: E731
    return Tangent(
        {n: zeros(list(params)) for n in names},
        {n: tuple(zeros(leaves)) for n in names},
    )


def contract(opt: AbstractOptimiser, grads, columns: dict[str, PyTree]) -> HyperParams:
    """Σ grads · columns[name], summed over what shares one raw value: the
    cotangent of each raw tuned hyperparameter."""
    raw = tuned_raw(opt)

    def spread(r):
        full = lambda v, g: jnp.broadcast_to(v, g.shape)  # noqa: E731
        return {n: jax.tree.map(full, broadcast(r[n], grads), grads) for n in raw}

    spread_values, vjp = jax.vjp(spread, raw)
    products = {
        n: cast_like(jax.tree.map(jnp.multiply, grads, columns[n]), spread_values[n])
        for n in raw
    }
    return vjp(products)[0]


def propagate(
    opt: AbstractOptimiser,
    grads,
    state,
    params,
    tangent: Tangent,
    hvps: dict[str, list[Array]] | None,
    decay: float,
    scale: Array | None = None,
):
    """Level 1's step, and Z' = decay·(∂Φ/∂(θ, s))·Z + ∂Φ/∂h for the map
    Φ: (θ, s) -> (θ + scale·update, s'), with `hvps` = H·Z_θ (None: H taken as
    0) and `scale` None for 1."""
    raw = tuned_raw(opt)
    names = tuple(raw)
    s_leaves, s_def = jax.tree.flatten(state)
    inexact = [_inexact(x) for x in s_leaves]

    def phi(r, s, p, g):
        o = with_raw(opt, r)
        return o.apply_rule(g, s, p, broadcast_values(o, g))

    def state_tangent(zs):
        it = iter(zs)
        return s_def.unflatten(
            [
                next(it) if ok else np.zeros(np.shape(x), jax.dtypes.float0)
                for x, ok in zip(s_leaves, inexact)
            ]
        )

    decayed = lambda xs: jax.tree.map(lambda z: decay * z, xs)  # noqa: E731
    out, z_params, z_state = None, {}, {}
    for n in names:
        t_raw = {
            m: jax.tree.map(jnp.ones_like if m == n else jnp.zeros_like, raw[m])
            for m in names
        }
        t_state = state_tangent(decayed(tangent.state[n]))
        t_params = decayed(tangent.params[n]) if params is not None else None
        if hvps is None:
            f = lambda r, s, p: phi(r, s, p, grads)  # noqa: E731
            primals, tangents = (raw, state, params), (t_raw, t_state, t_params)
        else:
            f = phi
            primals = (raw, state, params, grads)
            tangents = (t_raw, t_state, t_params, decayed(hvps[n]))
        out, (d_updates, d_state) = jax.jvp(f, primals, tangents)
        d_updates = scaled(d_updates, scale)
        z_params[n] = jax.tree.map(
            lambda z, du: decay * z + du, tangent.params[n], list(d_updates)
        )
        z_state[n] = tuple(t for t, ok in zip(jax.tree.leaves(d_state), inexact) if ok)
    updates, new_state = out
    return scaled(updates, scale), new_state, Tangent(z_params, z_state)


class RealTime(AbstractHypergradient):
    """Real-time hypergradients in forward mode (RTHO, Franceschi et al. 2017;
    with a decay, MARTHE, Donini et al. 2020).

    The tower carries Z = d(θ, s)/dh, the derivative of the parameters θ and of
    level 1's optimiser state s with respect to level 1's raw tuned
    hyperparameters h, through the whole run:

        Zₜ₊₁ = μ·(∂Φ/∂(θ, s))·Zₜ + ∂Φ/∂h,   hypergradient ⟨gₜ₊₁, Z_θ,ₜ₊₁⟩,

    where Φ is level 1's step including its state. With μ = 1 that is the exact
    derivative of the next loss with respect to a hyperparameter held at its
    value over the whole run; μ < 1 forgets old steps geometrically, and μ = 0
    is [`recursive_opt.OneStep`][] (the tower then keeps OneStep's records, so
    the two are bitwise equal). Levels above level 1 keep the one-step chain.

    ∂Φ/∂θ contains the loss's Hessian H, so with `curvature=True` the tower
    needs the loss: drive it with `tower.step(loss_fn, params, state, *batch)`,
    which takes one Hessian-vector product per tuned hyperparameter. With
    `curvature=False`, H is taken as 0 (only the identity, the optimiser's state
    and weight decay carry Z forward), and `tower.update(grads, ...)` works.

    Exact curvature needs per-tree hyperparameters at level 1 (one value each).
    Without it, per-leaf and per-element ones are served elementwise.

    **Arguments:**

    - `decay`: μ in [0, 1].
    - `curvature`: whether to propagate Z through the loss's Hessian.

    ```python
    tower = ro.Stack[3](ro.Adam(), hypergradient=ro.RealTime(decay=0.99))
    params, state, loss = tower.step(loss_fn, params, state, x, y)
    ```
    """

    decay: float = eqx.field(static=True)
    curvature: bool = eqx.field(static=True)

    def __init__(self, decay: float = 0.9, curvature: bool = True):
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"RealTime needs 0 <= decay <= 1, got {decay}.")
        self.decay = decay
        self.curvature = bool(curvature)

    @property
    def needs_loss(self) -> bool:
        return self.curvature and self.decay > 0

    def check(self, opt):
        if self.needs_loss:
            one_tangent_each(
                opt, "RealTime(curvature=True)", "RealTime(curvature=False)"
            )

    def init(self, opt, params, state, scaled=False):
        if self.decay == 0:
            return OneStep().init(opt, params, state, scaled)
        return zero_tangent(opt, params, state)

    def hypergrad(self, opt, state, record, grads):
        if self.decay == 0:
            return OneStep().hypergrad(opt, state, record, grads)
        return contract(opt, grads, record.params)

    def directions(self, record):
        return record.params if self.needs_loss else None

    def step(
        self, opt, grads, state, params, record, hvps=None, scale=None, cotangent=None
    ):
        if self.decay == 0:
            return OneStep().step(opt, grads, state, params, record, None, scale)
        return propagate(opt, grads, state, params, record, hvps, self.decay, scale)
